//! headroom-preflight: Limits profiles: check a host against one, apply it, persist it, roll it back exactly.
