//! headroom-probe: Fills Snapshots: eBPF maps when it can, /proc and sock_diag polling when not; exports Prometheus metrics.
