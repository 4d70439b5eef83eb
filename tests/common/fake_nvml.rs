//! Test fixture: builds the fake `libnvidia-ml.so.1` (`tests/fake_nvml/fake_nvml.c`) and gives
//! each test its own copy of it plus its own `fake_nvml.conf` (format: `tests/fake_nvml/README.md`).
//!
//! Every [`FakeNvml`] copies the built library into a fresh directory. A fresh file is a fresh
//! inode, so the dynamic loader gives each copy its own handle and its own global state (init
//! count, config, event sets), even when many tests share one process. The library reads the
//! `fake_nvml.conf` that sits next to it, and re-reads it whenever it changes, so a test can
//! reconfigure a running agent with [`FakeNvml::set_config`].
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// File name the fake library is copied to (what real drivers install).
pub const LIB_NAME: &str = "libnvidia-ml.so.1";
/// Config file the fake library looks for in its own directory.
pub const CONFIG_NAME: &str = "fake_nvml.conf";

fn source_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_nvml/fake_nvml.c")
}

/// Compiles `fake_nvml.c` once per process and returns the path of the built library.
///
/// The output lives in a per-process directory under `CARGO_TARGET_TMPDIR`, so test binaries
/// running in parallel never write the same file. Panics when `cc` is missing or fails.
pub fn build_fake_nvml() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("fake_nvml-build-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
                panic!("fake NVML: cannot create build dir {}: {e}", dir.display())
            });
            let out = dir.join(LIB_NAME);
            let src = source_path();
            let result = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o"])
                .arg(&out)
                .arg(&src)
                .args(["-ldl", "-lpthread"])
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "fake NVML: cannot run `cc` (a C compiler is needed for these tests): {e}"
                    )
                });
            if !result.status.success() {
                panic!(
                    "fake NVML: `cc` failed to compile {} ({}):\n{}{}",
                    src.display(),
                    result.status,
                    String::from_utf8_lossy(&result.stdout),
                    String::from_utf8_lossy(&result.stderr),
                );
            }
            out
        })
        .clone()
}

/// One private copy of the fake library, with its config file next to it.
///
/// The directory (library and config) is removed when this is dropped. A call still blocked
/// by `hang` then sees no config (all defaults, nothing hangs) and returns; the library stays
/// mapped after `dlclose`, so such a thread never runs into unmapped code.
#[derive(Debug)]
pub struct FakeNvml {
    dir: tempfile::TempDir,
}

impl FakeNvml {
    /// A fresh copy of the fake library configured with `config`.
    pub fn new(config: &str) -> FakeNvml {
        let built = build_fake_nvml();
        let dir = tempfile::Builder::new()
            .prefix("fake-nvml-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("fake NVML: cannot create a temp dir: {e}"));
        let lib = dir.path().join(LIB_NAME);
        std::fs::copy(&built, &lib).unwrap_or_else(|e| {
            panic!(
                "fake NVML: cannot copy {} to {}: {e}",
                built.display(),
                lib.display()
            )
        });
        let fake = FakeNvml { dir };
        fake.set_config(config);
        fake
    }

    /// Directory holding the library and its config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path to pass to `Nvml::builder().lib_path(..)` (or to the agent's library option).
    pub fn lib_path(&self) -> PathBuf {
        self.dir.path().join(LIB_NAME)
    }

    /// Path of the config file the library reads.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_NAME)
    }

    /// Replaces the whole config atomically (temp file in the same dir, then rename), so the
    /// library never reads a half-written file. Takes effect on the library's next call.
    pub fn set_config(&self, config: &str) {
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.path())
            .unwrap_or_else(|e| panic!("fake NVML: cannot create a temp config file: {e}"));
        tmp.write_all(config.as_bytes())
            .and_then(|()| tmp.flush())
            .unwrap_or_else(|e| panic!("fake NVML: cannot write the config: {e}"));
        tmp.persist(self.config_path())
            .unwrap_or_else(|e| panic!("fake NVML: cannot rename the config into place: {e}"));
    }

    /// Initialises nvml-wrapper against this copy; panics if init fails.
    pub fn nvml(&self) -> nvml_wrapper::Nvml {
        self.try_nvml()
            .unwrap_or_else(|e| panic!("fake NVML: Nvml init failed: {e}"))
    }

    /// Initialises nvml-wrapper against this copy.
    pub fn try_nvml(&self) -> Result<nvml_wrapper::Nvml, nvml_wrapper::error::NvmlError> {
        let lib = self.lib_path();
        nvml_wrapper::Nvml::builder()
            .lib_path(lib.as_os_str())
            .init()
    }

    /// The calls this copy answered so far to the NVML symbol `sym` (every user of the copy
    /// in this process counted: the loader hands out one library per file), through the
    /// fake's own `fake_nvml_calls`. Opening the copy here counts one init and one shutdown.
    pub fn calls(&self, sym: &str) -> u64 {
        let nvml = self.nvml();
        let name = std::ffi::CString::new(sym).unwrap();
        // SAFETY: the fake defines `unsigned long long fake_nvml_calls(const char *sym)`,
        // which only reads the NUL-terminated name; the library outlives the call (`nvml`).
        unsafe {
            let count = nvml
                .lib()
                .__library
                .get::<unsafe extern "C" fn(*const std::ffi::c_char) -> u64>(b"fake_nvml_calls\0")
                .unwrap_or_else(|e| panic!("fake NVML: no fake_nvml_calls: {e}"));
            count(name.as_ptr())
        }
    }
}
