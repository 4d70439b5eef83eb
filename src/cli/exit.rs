//! Every exit code gpulse itself chooses, in one place (scripts, systemd units and container
//! runtimes read them). Under `gpulse wrap`, gpulse otherwise exits with the child's code.

/// Success; for `scan`, a healthy node (or no GPU with `--allow-no-gpu`).
pub const OK: u8 = 0;

/// A runtime failure: the port is taken, the async runtime cannot start, the server stopped.
/// For `scan`: a degraded node, or no GPU without `--allow-no-gpu`.
pub const FAILURE: u8 = 1;

/// `scan`: a degraded node, or no GPU without `--allow-no-gpu` (same value as [`FAILURE`]:
/// "not healthy, act on it").
pub const DEGRADED: u8 = 1;

/// `verify`: the report is not valid (altered, another signer, another nonce, a broken chain).
pub const INVALID: u8 = 1;

/// A usage or configuration error, found before any port is bound (clap uses the same code
/// for a bad flag).
pub const USAGE: u8 = 2;

/// `scan`: an unhealthy node.
pub const UNHEALTHY: u8 = 3;

/// `wrap`: the command cannot be executed (found but not runnable), as a shell reports it.
pub const CANNOT_EXECUTE: u8 = 126;

/// `wrap`: the command was not found, as a shell reports it.
pub const NOT_FOUND: u8 = 127;
