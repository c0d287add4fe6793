//! What the nginx binary was built with: its configure arguments
//! (`--prefix`, `--conf-path`) and version, as `nginx -V` prints them.

use crate::host::Host;

/// What an nginx binary says of itself (what `nginx -V` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// `--prefix`, with a trailing slash (`/usr/local/nginx/` when unset).
    pub prefix: String,
    /// `--conf-path`, made absolute (`conf/nginx.conf` under the prefix when unset).
    pub conf: String,
    /// `1.22.1`, from "nginx version: nginx/1.22.1".
    pub version: Option<String>,
}

/// Reads [`Compiled`] from the bytes of an nginx binary: its "configure
/// arguments:" string and its version string.
pub fn compiled(binary: &str) -> Option<Compiled> {
    let at = binary
        .find("configure arguments:")
        .or_else(|| binary.find(" --prefix="))
        .or_else(|| binary.find(" --conf-path="))?;
    // Each is one NUL-terminated string literal.
    let end = binary[at..]
        .find(['\0', '\n'])
        .map_or(binary.len(), |i| at + i);
    let configure = &binary[at..end];
    let arg = |name: &str| {
        configure.split_whitespace().find_map(|w| {
            w.strip_prefix(name)
                .map(|v| v.trim_matches('\'').to_string())
        })
    };
    let mut prefix = arg("--prefix=").unwrap_or_else(|| "/usr/local/nginx".into());
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    let conf = arg("--conf-path=").unwrap_or_else(|| "conf/nginx.conf".into());
    let conf = if conf.starts_with('/') {
        conf
    } else {
        format!("{prefix}{conf}")
    };
    let version = binary.find("nginx version: nginx/").and_then(|i| {
        let v = &binary[i + "nginx version: nginx/".len()..];
        let v: String = v
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
            .take(32)
            .collect();
        (!v.is_empty()).then_some(v)
    });
    Some(Compiled {
        prefix,
        conf,
        version,
    })
}

/// [`compiled`] of the master's executable, read once per binary (by path,
/// size and modification time): the probe inspects at every snapshot.
pub(super) fn compiled_cached(host: &Host, pid: u32) -> Option<Compiled> {
    type Key = (std::path::PathBuf, u64, Option<std::time::SystemTime>);
    static CACHE: std::sync::Mutex<Vec<(Key, Option<Compiled>)>> =
        std::sync::Mutex::new(Vec::new());
    let exe = format!("/proc/{pid}/exe");
    let path = host.path(&exe);
    let meta = std::fs::metadata(&path).ok()?;
    let key: Key = (
        std::fs::canonicalize(&path).unwrap_or(path),
        meta.len(),
        meta.modified().ok(),
    );
    if let Ok(cache) = CACHE.lock() {
        if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
    }
    let c = host.read(&exe).ok().and_then(|b| compiled(&b));
    if let Ok(mut cache) = CACHE.lock() {
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((key, c.clone()));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_paths_and_version_from_the_binary() {
        let bin = "\0junk\0nginx version: nginx/1.22.1\n\0configure arguments: --with-cc-opt='-g -O2' --prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf --with-debug\n\0more --prefix=/wrong";
        assert_eq!(
            compiled(bin),
            Some(Compiled {
                prefix: "/usr/share/nginx/".into(),
                conf: "/etc/nginx/nginx.conf".into(),
                version: Some("1.22.1".into()),
            })
        );
        let c = compiled("\0configure arguments: --with-x\0").unwrap();
        assert_eq!(
            (c.prefix.as_str(), c.conf.as_str(), c.version),
            (
                "/usr/local/nginx/",
                "/usr/local/nginx/conf/nginx.conf",
                None
            )
        );
        assert_eq!(compiled("nothing here"), None);
    }

    #[test]
    fn the_installed_binary_names_debians_paths() {
        let Ok(b) = std::fs::read("/usr/sbin/nginx") else {
            return; // nginx not installed here
        };
        let c = compiled(&String::from_utf8_lossy(&b)).unwrap();
        assert_eq!(
            (c.prefix.as_str(), c.conf.as_str()),
            ("/usr/share/nginx/", "/etc/nginx/nginx.conf")
        );
        assert!(c.version.is_some());
    }
}
