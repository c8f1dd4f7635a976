//! Files on a volume the agent writes, opened so that nothing the agent planted redirects them.
//! The agent (or a second pod that mounts the same claim) may swap any directory or file of
//! the image store for a symbolic link, and the supervisor would otherwise follow it with
//! its privilege: writing, truncating or deleting outside the volume. So every path is
//! resolved one directory file descriptor at a time with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, checks are made on the descriptor that was opened,
//! files are created exclusively, and removal never leaves the directory it started in.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// No link of any kind is followed, and nothing resolves above the directory it starts from.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);
/// How deep [`remove_all`] goes: images are flat, and a hostile tree must not exhaust the stack.
const MAX_DEPTH: usize = 16;

fn io(errno: rustix::io::Errno) -> std::io::Error {
    errno.into()
}

/// Opens directory `path` with no symbolic link at any step, creating what is missing when
/// `create` (mode 0700). The path's start (`/`, or the working directory) is trusted; every
/// component after it may be the agent's.
pub fn open_path(path: &Path, create: bool) -> std::io::Result<OwnedFd> {
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = rustix::fs::openat2(
        rustix::fs::CWD,
        start,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::empty(),
    )
    .map_err(io)?;
    for component in path.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} has a `..`", path.display()),
                ));
            }
        };
        if create {
            make_dir_at(&dir, name)?;
        }
        dir = open_dir_at(&dir, name)?;
    }
    Ok(dir)
}

/// Opens directory `name` beneath `dir`.
pub fn open_dir(dir: &impl AsFd, name: &str) -> std::io::Result<OwnedFd> {
    open_dir_at(dir, name.as_ref())
}

fn open_dir_at(dir: &impl AsFd, name: &std::ffi::OsStr) -> std::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    )
    .map_err(io)
}

/// Makes directory `name` beneath `dir` (mode 0700); one that is there already is fine.
fn make_dir_at(dir: &impl AsFd, name: &std::ffi::OsStr) -> std::io::Result<()> {
    match rustix::fs::mkdirat(dir, name, Mode::RWXU) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Opens regular file `name` beneath `dir` for reading. A FIFO or device is refused without
/// blocking on it.
pub fn open_file(dir: &impl AsFd, name: &str) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    )
    .map_err(io)?;
    let stat = rustix::fs::fstat(&fd).map_err(io)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{name} is not a regular file"),
        ));
    }
    Ok(std::fs::File::from(fd))
}

/// Reads regular file `name` beneath `dir`, at most `max` bytes of it.
pub fn read_file(dir: &impl AsFd, name: &str, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_file(dir, name)?.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Writes file `name` beneath `dir` whole: into a new `<name>.partial` (created exclusively,
/// so never through a planted link) that is then renamed over `name`.
pub fn write_file(dir: &impl AsFd, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let partial = format!("{name}.partial");
    remove_all(dir, &partial)?;
    let fd = rustix::fs::openat2(
        dir,
        partial.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
        BENEATH,
    )
    .map_err(io)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    file.sync_all()?;
    rustix::fs::renameat(dir, partial.as_str(), dir, name).map_err(io)
}

/// The entries of `dir` that are directories, by name (names that are not UTF-8 left out).
pub fn directories(dir: &impl AsFd) -> std::io::Result<Vec<String>> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|(_, kind)| *kind == FileType::Directory)
        .map(|(name, _)| name)
        .collect())
}

/// The entries of `dir` that are regular files, by name.
pub fn files(dir: &impl AsFd) -> std::io::Result<Vec<String>> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|(_, kind)| *kind == FileType::RegularFile)
        .map(|(name, _)| name)
        .collect())
}

/// Each entry of `dir` with its type as `lstat` gives it: a link is a link, never its target.
fn entries(dir: &impl AsFd) -> std::io::Result<Vec<(String, FileType)>> {
    let mut found = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io)?;
        found.push((name.to_string(), FileType::from_raw_mode(stat.st_mode)));
    }
    Ok(found)
}

/// Removes `name` beneath `dir`, and all beneath it when it is a directory. A link is
/// removed itself; what it points to is never touched. Missing is fine.
pub fn remove_all(dir: &impl AsFd, name: &str) -> std::io::Result<()> {
    remove_at_depth(dir, name, 0)
}

fn remove_at_depth(dir: &impl AsFd, name: &str, depth: usize) -> std::io::Result<()> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io);
    }
    if depth >= MAX_DEPTH {
        return Err(std::io::Error::other(format!(
            "{name}: nested deeper than {MAX_DEPTH}"
        )));
    }
    let inner = open_dir(dir, name)?;
    for (entry, _) in entries(&inner)? {
        remove_at_depth(&inner, &entry, depth + 1)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io)
}

/// A path that names the directory `fd` holds open, for a child process (`runsc`) that takes
/// paths: `/proc/<this process>/fd/<n>` resolves to that directory whatever the agent has
/// since renamed or replaced.
pub fn path_of(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_fd().as_raw_fd()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_link_anywhere_on_the_path_is_refused() {
        let volume = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), volume.path().join(".sandman")).expect("plant");
        let through = volume.path().join(".sandman/checkpoints");
        assert!(open_path(&through, true).is_err());
        assert!(
            !outside.path().join("checkpoints").exists(),
            "nothing made outside"
        );
        let made = open_path(&volume.path().join("own/checkpoints"), true).expect("made");
        assert!(volume.path().join("own/checkpoints").is_dir());
        drop(made);
    }

    #[test]
    fn writes_and_reads_never_go_through_a_planted_link() {
        let volume = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let target = outside.path().join("victim");
        std::fs::write(&target, b"keep me").expect("victim");
        let dir = open_path(volume.path(), false).expect("open");
        symlink(&target, volume.path().join("restored")).expect("plant");
        symlink(&target, volume.path().join("meta.json.partial")).expect("plant");
        write_file(&dir, "meta.json", b"{}").expect("write beside the link");
        assert_eq!(std::fs::read(&target).expect("victim"), b"keep me");
        assert!(
            read_file(&dir, "restored", 1024).is_err(),
            "a link is not read"
        );
        write_file(&dir, "restored", b"now").expect("replaces the link itself");
        assert_eq!(std::fs::read(&target).expect("victim"), b"keep me");
        assert_eq!(read_file(&dir, "restored", 1024).expect("read"), b"now");
    }

    #[test]
    fn removal_removes_links_not_what_they_point_to() {
        let volume = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("precious"), b"x").expect("write");
        let image = volume.path().join("000000000000001-s1");
        std::fs::create_dir(&image).expect("image");
        symlink(outside.path(), image.join("elsewhere")).expect("plant");
        symlink(outside.path(), volume.path().join("000000000000002-s2")).expect("plant");
        let dir = open_path(volume.path(), false).expect("open");
        remove_all(&dir, "000000000000001-s1").expect("remove");
        remove_all(&dir, "000000000000002-s2").expect("remove");
        assert!(!image.exists());
        assert!(outside.path().join("precious").exists());
        assert_eq!(directories(&dir).expect("list"), Vec::<String>::new());
    }

    #[test]
    fn a_fifo_is_not_opened_as_a_file() {
        let volume = tempfile::tempdir().expect("tempdir");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            volume.path().join("meta.json").as_path(),
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .expect("fifo");
        let dir = open_path(volume.path(), false).expect("open");
        assert!(read_file(&dir, "meta.json", 1024).is_err());
        assert!(files(&dir).expect("list").is_empty());
    }
}
