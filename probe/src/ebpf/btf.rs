//! Kernel struct member offsets from the running kernel's BTF
//! (/sys/kernel/btf/vmlinux), so one eBPF object works on any kernel layout.

use btf_rs::{Btf, Type};
use headroom_probe_common::Config;

use super::Error;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Byte offset of `member` inside struct/union `container`, searching through
/// anonymous struct and union members as C does (`skc_num` lives in an
/// anonymous union inside an anonymous struct of `struct sock_common`).
pub fn member_offset(btf: &Btf, container: &str, member: &str) -> Result<u32, Error> {
    let types = btf
        .resolve_types_by_name(container)
        .map_err(|e| Error::Btf(format!("struct {container}: {e}")))?;
    for t in types {
        if let Type::Struct(s) | Type::Union(s) = t {
            if let Some(bits) = find(btf, &s, member, 0) {
                return Ok(bits / 8);
            }
        }
    }
    Err(Error::Btf(format!(
        "no member {member} in struct {container}"
    )))
}

fn find(btf: &Btf, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Option<u32> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let at = base_bits + m.bit_offset();
        if name == member {
            return Some(at);
        }
        if name.is_empty() {
            if let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m) {
                if let Some(found) = find(btf, &inner, member, at) {
                    return Some(found);
                }
            }
        }
    }
    None
}

/// Everything the programs read from kernel memory, resolved for this kernel.
pub fn resolve_config() -> Result<Config, Error> {
    if !std::path::Path::new(VMLINUX).exists() {
        return Err(Error::Btf(format!(
            "{VMLINUX} is missing (kernel built without CONFIG_DEBUG_INFO_BTF)"
        )));
    }
    let btf = Btf::from_file(VMLINUX).map_err(|e| Error::Btf(format!("{VMLINUX}: {e}")))?;
    let sk_common = member_offset(&btf, "sock", "__sk_common")?;
    let common = |m: &str| member_offset(&btf, "sock_common", m).map(|o| o + sk_common);
    let tw_common = member_offset(&btf, "inet_timewait_sock", "__tw_common")?;
    if tw_common != sk_common {
        return Err(Error::Btf(
            "sock and inet_timewait_sock do not share their sock_common offset".into(),
        ));
    }
    let ns = member_offset(&btf, "net", "ns")?;
    Ok(Config {
        off_ack_backlog: member_offset(&btf, "sock", "sk_ack_backlog")?,
        off_max_ack_backlog: member_offset(&btf, "sock", "sk_max_ack_backlog")?,
        off_state: common("skc_state")?,
        off_num: common("skc_num")?,
        off_rcv_saddr: common("skc_rcv_saddr")?,
        off_v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        off_net: common("skc_net")?,
        off_net_inum: ns + member_offset(&btf, "ns_common", "inum")?,
        off_tw_timer: member_offset(&btf, "inet_timewait_sock", "tw_timer")?,
        watch_new_listeners: 1,
        off_timer_function: member_offset(&btf, "timer_list", "function")?,
        off_family: common("skc_family")?,
        off_protocol: member_offset(&btf, "sock", "sk_protocol")?,
        _pad: 0,
        tw_timer_fn: 0,
    })
}
