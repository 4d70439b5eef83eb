//! Reading a small file a setting names (the config file, certificates, keys, tokens, CA
//! bundles) without ever waiting on it: opened non-blocking, read only when it is a regular
//! file, at most [`MAX_FILE_BYTES`]. A FIFO with no writer, a terminal, `/dev/zero` or a
//! directory is refused at once instead of hanging a load, a reload or shutdown.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// Largest file read for a setting: configs, certificates, keys and tokens are a few KiB, and
/// a path that points at something huge (a log file given by mistake) is better refused.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Whether `/dev/null` counts as an empty file (the config file: "no config").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevNull {
    Allowed,
    Refused,
}

/// Reads the whole of a regular file of at most [`MAX_FILE_BYTES`], with its metadata (for
/// permission checks). The error says why, without the path (callers name key and path).
pub fn read_small_file(path: &Path, dev_null: DevNull) -> Result<(Vec<u8>, Metadata), String> {
    let cannot = |e: io::Error| format!("cannot read file: {e}");
    let file = open_nonblocking(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        if dev_null == DevNull::Allowed && is_dev_null(&meta) {
            return Ok((Vec::new(), meta));
        }
        return Err(format!(
            "cannot read file: it is {}, not a regular file",
            file_kind(&meta)
        ));
    }
    let too_big = || format!("cannot read file: larger than {MAX_FILE_BYTES} bytes (1 MiB)");
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // The cap holds even if the file grows while it is read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    Ok((bytes, meta))
}

/// Opens `path` for reading without waiting: `O_NONBLOCK` makes opening a FIFO return at once
/// (it would otherwise wait for a writer, forever); regular files ignore the flag.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let nonblock = i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0);
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nonblock)
        .open(path)
}

fn is_dev_null(meta: &Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device()
        && std::fs::metadata("/dev/null").is_ok_and(|n| n.rdev() == meta.rdev())
}

/// What a file that is not a regular one is, for the error message.
pub fn file_kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.pem");
        std::fs::write(&ok, b"hello").unwrap();
        assert_eq!(read_small_file(&ok, DevNull::Refused).unwrap().0, b"hello");

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(
            read_small_file(&big, DevNull::Refused)
                .unwrap_err()
                .contains("larger than")
        );

        let dir_err = read_small_file(dir.path(), DevNull::Refused).unwrap_err();
        assert!(dir_err.contains("a directory"), "{dir_err}");

        let null = Path::new("/dev/null");
        assert!(
            read_small_file(null, DevNull::Refused)
                .unwrap_err()
                .contains("a character device")
        );
        assert!(
            read_small_file(null, DevNull::Allowed)
                .unwrap()
                .0
                .is_empty()
        );
        let zero = read_small_file(Path::new("/dev/zero"), DevNull::Allowed).unwrap_err();
        assert!(zero.contains("a character device"), "{zero}");
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = read_small_file(&fifo, DevNull::Allowed).unwrap_err();
        assert!(err.contains("FIFO"), "{err}");
    }
}
