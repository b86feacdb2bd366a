//! A read-only view of the connection table (`LB_CONNS`: an array of
//! `ConnEntry`, created with BPF_F_MMAPABLE) mapped into lbd's memory.
//! The sweeper and `lbctl conns` walk every entry, millions of them: one
//! lookup syscall per entry would take seconds, a walk of the mapping
//! takes milliseconds.

use std::os::fd::{AsFd as _, AsRawFd as _};
use std::ptr::NonNull;

use anyhow::{Context as _, anyhow};
use aya::maps::{Map, MapData};
use lb_common::ConnEntry;

pub struct ConnTable {
    /// Keeps the map (and so the mapping's memory) alive.
    _map: MapData,
    base: NonNull<ConnEntry>,
    entries: usize,
    mapped_len: usize,
}

// SAFETY: the mapping is only read, through volatile copies; the pointer
// is not tied to the thread that made it.
unsafe impl Send for ConnTable {}
// SAFETY: as above; reading from several threads is fine.
unsafe impl Sync for ConnTable {}

impl ConnTable {
    pub fn new(map: MapData) -> anyhow::Result<ConnTable> {
        let info = map.info().context("reading the connection table's info")?;
        anyhow::ensure!(
            info.value_size() as usize == size_of::<ConnEntry>(),
            "the connection table's entries are {} bytes, not {}",
            info.value_size(),
            size_of::<ConnEntry>()
        );
        let entries = info.max_entries() as usize;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        let mapped_len = (entries * size_of::<ConnEntry>()).next_multiple_of(page);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: maps a BPF array map created with BPF_F_MMAPABLE,
        // read-only and shared; the kernel keeps its memory while mapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(anyhow!(
                "mapping the connection table: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(ConnTable {
            _map: map,
            base: NonNull::new(p.cast()).context("mmap returned null")?,
            entries,
            mapped_len,
        })
    }

    /// Entries of the table (sets × ways).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The entry at `index`, copied. The data plane writes entries
    /// meanwhile without locks: a copy can mix two flows' halves, which
    /// only ever costs a wrong line in a listing or one miscounted flow
    /// until the next sweep.
    pub fn get(&self, index: usize) -> Option<ConnEntry> {
        (index < self.entries).then(|| {
            // SAFETY: in bounds of the mapping; a volatile copy of plain
            // data that another CPU may be writing.
            unsafe { std::ptr::read_volatile(self.base.as_ptr().add(index)) }
        })
    }

    /// The used entries (a flow's key, `family != 0`).
    pub fn used(&self) -> impl Iterator<Item = ConnEntry> + '_ {
        (0..self.entries)
            .filter_map(|i| self.get(i))
            .filter(|e| e.key.family != 0)
    }
}

impl Drop for ConnTable {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no reference into it
        // outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_len) };
    }
}

impl TryFrom<Map> for ConnTable {
    type Error = ConnTableError;

    fn try_from(map: Map) -> Result<ConnTable, ConnTableError> {
        match map {
            Map::Array(data) => ConnTable::new(data).map_err(ConnTableError),
            _ => Err(ConnTableError(anyhow!(
                "the connection table is not an array map"
            ))),
        }
    }
}

/// `ConnTable`'s error as a std error (what `take` wants).
#[derive(Debug)]
pub struct ConnTableError(anyhow::Error);

impl std::fmt::Display for ConnTableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ConnTableError {}
