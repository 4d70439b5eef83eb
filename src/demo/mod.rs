//! `gpulse demo`: what stands in for real hardware and a real inference server, so every
//! metric and panel has data on a laptop.
//!
//! * `gpu_sim`: simulated GPUs (a collector like the NVML one, deterministic per tick).
//! * `server`: a vLLM-like inference server on a loopback port, probed like a real one.

pub mod gpu_sim;
pub mod server;

/// What `gpulse demo` simulates and when, for its start-up log line (none of it is measured).
pub fn simulated() -> String {
    format!(
        "GPU load waves; a thermal throttle on GPU 1 for {}s of every {}s; one Xid every {}s; \
         an inference server that answers 500 for {}s of every {}s",
        gpu_sim::THROTTLE_LENGTH_S,
        gpu_sim::THROTTLE_PERIOD_S,
        gpu_sim::DEMO_XID_EVERY.as_secs(),
        server::DEMO_OUTAGE.as_secs(),
        server::DEMO_OUTAGE_EVERY.as_secs(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_summary_names_every_injection_with_its_period() {
        assert_eq!(
            super::simulated(),
            "GPU load waves; a thermal throttle on GPU 1 for 20s of every 120s; one Xid every \
             180s; an inference server that answers 500 for 20s of every 300s"
        );
    }
}
