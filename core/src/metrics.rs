//! Prometheus metric names, in one place so that the probe, the server, the
//! alert rules, the dashboard and `headroom fleet` cannot drift apart.
//! node_exporter style: base units in the name, counters end in `_total`;
//! labels `constraint`, `listener`, `state`, `errno`, `syscall`, `worker`,
//! `source`, `transport`, `reason`, `method`, `code`.

// Capacity model (probe and server both export these for their target).
pub const PREDICTED_MAX_CONNECTIONS: &str = "headroom_predicted_max_connections";
pub const CONSTRAINT_LIMIT: &str = "headroom_constraint_limit";
pub const CONSTRAINT_USED: &str = "headroom_constraint_used";
pub const CONSTRAINT_HEADROOM: &str = "headroom_constraint_headroom";
pub const CONSTRAINT_BINDING: &str = "headroom_constraint_binding";
pub const CONNECTIONS: &str = "headroom_connections";
pub const TIME_TO_LIMIT_SECONDS: &str = "headroom_time_to_limit_seconds";

// Probe: what it sees.
pub const OPEN_FDS: &str = "headroom_open_fds";
pub const OPEN_FDS_LIMIT: &str = "headroom_open_fds_limit";
pub const OPEN_FDS_PEAK: &str = "headroom_open_fds_peak";
pub const ACCEPT_QUEUE_DEPTH: &str = "headroom_accept_queue_depth";
pub const ACCEPT_QUEUE_PEAK: &str = "headroom_accept_queue_peak";
pub const ACCEPT_QUEUE_LIMIT: &str = "headroom_accept_queue_limit";
pub const ACCEPT_QUEUE_FULL_TOTAL: &str = "headroom_accept_queue_full_total";
pub const LISTEN_OVERFLOWS_TOTAL: &str = "headroom_listen_overflows_total";
pub const LISTEN_DROPS_TOTAL: &str = "headroom_listen_drops_total";
pub const TCP_SOCKETS: &str = "headroom_tcp_sockets";
pub const TCP_TRANSITIONS_TOTAL: &str = "headroom_tcp_transitions_total";
pub const FD_ERRORS_TOTAL: &str = "headroom_fd_errors_total";
pub const EPHEMERAL_PORTS: &str = "headroom_ephemeral_ports";
pub const EPHEMERAL_PORTS_USED: &str = "headroom_ephemeral_ports_used";
pub const PROBE_SOURCE: &str = "headroom_probe_source";
pub const PROBE_EBPF_ENABLED: &str = "headroom_probe_ebpf_enabled";
pub const PROBE_TARGET_UP: &str = "headroom_probe_target_up";
pub const PROBE_EVENTS_DROPPED_TOTAL: &str = "headroom_probe_events_dropped_total";

// Server: what it does.
pub const SERVER_CONNECTIONS_ACTIVE: &str = "headroom_server_connections_active";
pub const SERVER_CONNECTIONS_ACCEPTED_TOTAL: &str = "headroom_server_connections_accepted_total";
pub const SERVER_CONNECTIONS_REFUSED_TOTAL: &str = "headroom_server_connections_refused_total";
pub const SERVER_CONNECTIONS_MAX: &str = "headroom_server_connections_max";
pub const SERVER_CONNECTIONS_PASSED_TOTAL: &str = "headroom_server_connections_passed_total";
pub const SERVER_MESSAGES_TOTAL: &str = "headroom_server_messages_total";
pub const SERVER_ERRORS_TOTAL: &str = "headroom_server_errors_total";
pub const SERVER_REQUEST_DURATION_SECONDS: &str = "headroom_server_request_duration_seconds";
pub const SERVER_RECEIVED_BYTES_TOTAL: &str = "headroom_server_received_bytes_total";
pub const SERVER_SENT_BYTES_TOTAL: &str = "headroom_server_sent_bytes_total";
pub const SERVER_WORKERS: &str = "headroom_server_workers";
pub const SERVER_WORKER_RESTARTS_TOTAL: &str = "headroom_server_worker_restarts_total";
pub const SERVER_SESSIONS_LOST_TOTAL: &str = "headroom_server_sessions_lost_total";
