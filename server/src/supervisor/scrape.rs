//! The supervisor's one Prometheus page for the whole service: every live
//! worker's page (read with core's parser, labelled `worker="i"`), the
//! supervisor's own counters (written by the prometheus crate) and one
//! service-wide capacity prediction, merged into one family each.

use super::Sup;
use crate::workers::{send, tag};
use headroom_core::metrics as m;
use headroom_core::prom::{self, Family};
use headroom_probe::export::CapacityGauges;
use prometheus::core::Collector;
use prometheus::{IntCounter, IntGauge, Opts, TextEncoder};
use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a scrape waits for a worker's page.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// The supervisor's own series. They are the counters themselves, not a
/// copy taken at each scrape.
pub(super) struct Own {
    workers: IntGauge,
    pub(super) restarts: IntCounter,
    pub(super) lost: IntCounter,
    pub(super) refused_full: IntCounter,
    pub(super) placed: IntCounter,
}

impl Own {
    pub(super) fn new() -> prometheus::Result<Own> {
        let refused = Opts::new(
            m::SERVER_CONNECTIONS_REFUSED_TOTAL,
            "Connections refused with an error line, by the limit that refused them",
        )
        .const_label("transport", "tcp")
        .const_label("reason", "nofile")
        .const_label("worker", "supervisor");
        Ok(Own {
            workers: IntGauge::new(m::SERVER_WORKERS, "Worker processes serving now")?,
            restarts: IntCounter::new(
                m::SERVER_WORKER_RESTARTS_TOTAL,
                "Workers restarted after they died",
            )?,
            lost: IntCounter::new(
                m::SERVER_SESSIONS_LOST_TOTAL,
                "Sessions lost with a worker that died",
            )?,
            refused_full: IntCounter::with_opts(refused)?,
            placed: IntCounter::new(
                m::SERVER_CONNECTIONS_PASSED_TOTAL,
                "Connections a full worker passed to a sibling with room",
            )?,
        })
    }

    /// The families, in this order, with `live` workers serving.
    fn families(&self, live: usize) -> Vec<Family> {
        self.workers.set(i64::try_from(live).unwrap_or(i64::MAX));
        let collectors: [&dyn Collector; 5] = [
            &self.workers,
            &self.restarts,
            &self.lost,
            &self.refused_full,
            &self.placed,
        ];
        let protos: Vec<_> = collectors.iter().flat_map(|c| c.collect()).collect();
        let text = TextEncoder::new()
            .encode_to_string(&protos)
            .unwrap_or_default();
        prom::parse_families(&text).unwrap_or_default()
    }
}

/// One scrape: every live worker's page merged with the supervisor's own
/// counters and one service-wide capacity prediction. The workers' own
/// capacity gauges are dropped: per-worker predictions next to the
/// service's would double every `sum`.
pub(super) async fn scrape(sup: &Rc<RefCell<Sup>>) -> String {
    let mut pending = Vec::new();
    let mut held = Vec::new();
    {
        let mut s = sup.borrow_mut();
        let shm = s.shm.clone();
        let live: Vec<usize> = s.live().map(|(i, _)| i).collect();
        for i in live {
            let p = s.procs[i].as_mut().expect("live");
            held.push((p.pid, shm.slots[i].active.load(Ordering::SeqCst)));
            let (tx, rx) = oneshot::channel();
            if send(p.chan.as_raw_fd(), &[tag::METRICS], None).is_ok() {
                p.waiters.push_back(tx);
                pending.push((i, rx));
            }
        }
    }
    // /proc and sock_diag reads block: off the supervisor's only thread,
    // while the workers answer.
    let sampler = sup.borrow().sampler.clone();
    let capacity = tokio::task::spawn_blocking(move || {
        // A poisoned lock (a sample panicked) still holds a usable source.
        let mut s = sampler.lock().unwrap_or_else(|p| p.into_inner());
        s.service(&held)
    });
    let mut pages = Vec::new();
    for (i, rx) in pending {
        if let Ok(Ok(text)) = tokio::time::timeout(WORKER_TIMEOUT, rx).await {
            // A page that does not parse (cut at the message size, say) is
            // left out: passed on, it would fail the whole scrape.
            if let Ok(families) = prom::parse_families(&text) {
                let families = without_families(families, &CapacityGauges::NAMES);
                pages.push((Some(i.to_string()), families));
            }
        }
    }
    let mut own = {
        let s = sup.borrow();
        s.own.families(s.live().count())
    };
    // A worker that died mid-snapshot: no prediction this scrape rather than a wrong one.
    if let Ok(Ok(p)) = capacity.await {
        let page = headroom_probe::export::render_prediction(&p);
        own.extend(prom::parse_families(&page).unwrap_or_default());
    }
    pages.push((None, own));
    merge_pages(pages)
}

/// `families` without those named in `names`.
fn without_families(mut families: Vec<Family>, names: &[&str]) -> Vec<Family> {
    families.retain(|f| !names.contains(&f.name.as_str()));
    families
}

/// Merges pages into one: each family's HELP and TYPE once, then its
/// samples from every page, a `worker` label added first where the page
/// has one (and the sample does not already carry it).
fn merge_pages(pages: Vec<(Option<String>, Vec<Family>)>) -> String {
    let mut merged: Vec<Family> = Vec::new();
    for (worker, families) in pages {
        for mut f in families {
            if let Some(w) = &worker {
                for s in &mut f.samples {
                    if s.label("worker").is_none() {
                        s.labels.insert(0, ("worker".to_string(), w.clone()));
                    }
                }
            }
            match merged.iter_mut().find(|g| g.name == f.name) {
                Some(g) => {
                    g.help = g.help.take().or(f.help);
                    g.kind = g.kind.take().or(f.kind);
                    g.samples.append(&mut f.samples);
                }
                None => merged.push(f),
            }
        }
    }
    prom::render(&merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(text: &str) -> Vec<Family> {
        prom::parse_families(text).unwrap()
    }

    #[test]
    fn pages_merge_into_one_family_each_with_worker_labels() {
        let a = "# HELP x_total Things\n# TYPE x_total counter\nx_total{transport=\"tcp\"} 3\n# HELP g A gauge\n# TYPE g gauge\ng 1\n";
        let b = "# HELP x_total Things\n# TYPE x_total counter\nx_total{transport=\"tcp\"} 4\n# HELP h_seconds H\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"0.1\"} 2\nh_seconds_sum 0.5\nh_seconds_count 2\n";
        let own = "# HELP w Workers\n# TYPE w gauge\nw 2\n";
        let m = merge_pages(vec![
            (Some("0".into()), page(a)),
            (Some("1".into()), page(b)),
            (None, page(own)),
        ]);
        assert_eq!(
            m,
            "# HELP x_total Things\n# TYPE x_total counter\n\
             x_total{worker=\"0\",transport=\"tcp\"} 3\nx_total{worker=\"1\",transport=\"tcp\"} 4\n\
             # HELP g A gauge\n# TYPE g gauge\ng{worker=\"0\"} 1\n\
             # HELP h_seconds H\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{worker=\"1\",le=\"0.1\"} 2\nh_seconds_sum{worker=\"1\"} 0.5\nh_seconds_count{worker=\"1\"} 2\n\
             # HELP w Workers\n# TYPE w gauge\nw 2\n"
        );
    }

    #[test]
    fn worker_capacity_families_are_dropped_whole() {
        let text = "# HELP headroom_connections C\n# TYPE headroom_connections gauge\nheadroom_connections 3\n\
                    # HELP headroom_constraint_limit L\n# TYPE headroom_constraint_limit gauge\nheadroom_constraint_limit{constraint=\"nofile\"} 512\n\
                    # HELP headroom_connections_other O\n# TYPE headroom_connections_other gauge\nheadroom_connections_other 1\n";
        assert_eq!(
            prom::render(&without_families(page(text), &CapacityGauges::NAMES)),
            "# HELP headroom_connections_other O\n# TYPE headroom_connections_other gauge\nheadroom_connections_other 1\n"
        );
    }

    #[test]
    fn own_series_are_written_by_the_prometheus_crate_under_cores_names() {
        let own = Own::new().unwrap();
        own.restarts.inc();
        own.lost.inc_by(3);
        own.refused_full.inc_by(2);
        own.placed.inc_by(7);
        assert_eq!(
            prom::render(&own.families(2)),
            "# HELP headroom_server_workers Worker processes serving now\n\
             # TYPE headroom_server_workers gauge\nheadroom_server_workers 2\n\
             # HELP headroom_server_worker_restarts_total Workers restarted after they died\n\
             # TYPE headroom_server_worker_restarts_total counter\nheadroom_server_worker_restarts_total 1\n\
             # HELP headroom_server_sessions_lost_total Sessions lost with a worker that died\n\
             # TYPE headroom_server_sessions_lost_total counter\nheadroom_server_sessions_lost_total 3\n\
             # HELP headroom_server_connections_refused_total Connections refused with an error line, by the limit that refused them\n\
             # TYPE headroom_server_connections_refused_total counter\n\
             headroom_server_connections_refused_total{reason=\"nofile\",transport=\"tcp\",worker=\"supervisor\"} 2\n\
             # HELP headroom_server_connections_passed_total Connections a full worker passed to a sibling with room\n\
             # TYPE headroom_server_connections_passed_total counter\nheadroom_server_connections_passed_total 7\n"
        );
    }

    /// A worker's refused line already names its worker; the supervisor's
    /// own page gets no label; a family seen first without HELP takes the
    /// next page's.
    #[test]
    fn existing_worker_labels_stay_and_help_is_taken_where_found() {
        let a = "x_total{worker=\"supervisor\"} 1\n";
        let b = "# HELP x_total X\n# TYPE x_total counter\nx_total 2\n";
        assert_eq!(
            merge_pages(vec![
                (Some("0".into()), page(a)),
                (Some("1".into()), page(b))
            ]),
            "# HELP x_total X\n# TYPE x_total counter\n\
             x_total{worker=\"supervisor\"} 1\nx_total{worker=\"1\"} 2\n"
        );
    }
}
