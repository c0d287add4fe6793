//! The protocol revisions this engine serves, the era each belongs to, and
//! the `_meta` keys that carry a stateless request's envelope. One
//! definition for the engine and every transport.

/// Initialize-era revisions, newest first.
pub const LEGACY_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
pub const LATEST_LEGACY: &str = "2025-11-25";
/// Stateless-era revisions.
pub const STATELESS_VERSIONS: [&str; 1] = [FIRST_STATELESS];
/// The first revision of the stateless era.
pub const FIRST_STATELESS: &str = "2026-07-28";
pub const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
pub const CLIENT_CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
pub const LOG_LEVEL_KEY: &str = "io.modelcontextprotocol/logLevel";
pub const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";
/// Where a client presents the `--token-file` token, in both eras:
/// `params._meta["headroom/token"]` of `initialize`, or of a stateless request.
pub const TOKEN_META_KEY: &str = "headroom/token";

/// A stateless-era revision this engine serves.
pub fn is_stateless(version: &str) -> bool {
    STATELESS_VERSIONS.contains(&version)
}

/// Revision ordering: "2025-06-18" >= "2025-03-26" (dates compare as text).
pub fn at_least(version: &str, min: &str) -> bool {
    version >= min
}

/// The era a transport hands a request to when a header names `version`:
/// the stateless era from its first revision on (a later one included, for
/// the engine to refuse with -32022), the initialize era before it.
pub fn stateless_era(version: &str) -> bool {
    at_least(version, FIRST_STATELESS)
}
