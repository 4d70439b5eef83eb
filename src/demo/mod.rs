//! `gpulse demo`: what stands in for real hardware and a real inference server, so every
//! metric and panel has data on a laptop.
//!
//! * `gpu_sim`: simulated GPUs (a collector like the NVML one, deterministic per tick).
//! * `server`: a vLLM-like inference server on a loopback port, probed like a real one.

pub mod gpu_sim;
pub mod server;
