//! What the XDP data plane's flow tables cost in memory, checked against
//! what the machine has before they are created: the kernel allocates them
//! whole at load time, and a table too big for the machine should fail
//! with its size, not with an errno that reads like a missing capability.

use std::fmt;

use lb_common::{ConnEntry, PersistInfo, PersistKey, conn_table_entries};

use super::xdp::persist_table_entries;

/// The kernel's per-element header of a preallocated (LRU) hash map
/// (`struct htab_elem`), about.
const HTAB_ELEM_HEADER: u64 = 48;

const MIB: u64 = 1 << 20;

/// Bytes of the connection and persistence tables for `conn_table_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableBytes {
    pub conn_entries: u32,
    pub conns: u64,
    pub persist: u64,
}

impl TableBytes {
    pub fn of(conn_table_size: u32) -> Self {
        let conn_entries = conn_table_entries(conn_table_size);
        let persist_entry = HTAB_ELEM_HEADER
            + round8(size_of::<PersistKey>() as u64)
            + round8(size_of::<PersistInfo>() as u64);
        TableBytes {
            conn_entries,
            conns: u64::from(conn_entries) * size_of::<ConnEntry>() as u64,
            persist: u64::from(persist_table_entries(conn_entries)) * persist_entry,
        }
    }

    pub fn total(&self) -> u64 {
        self.conns + self.persist
    }
}

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// The flow tables would not fit in the memory available: caused by the
/// config (`global.conn_table_size`), so no reason to fall back to IPVS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablesTooBig {
    pub conn_table_size: u32,
    pub bytes: TableBytes,
    pub available: u64,
}

impl fmt::Display for TablesTooBig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "global.conn_table_size {} needs {} MiB (connection table: {} entries of 64 bytes, {} MiB; \
             persistence templates: {} MiB) but only {} MiB of memory is available (MemAvailable in \
             /proc/meminfo); lower conn_table_size or free memory",
            self.conn_table_size,
            self.bytes.total().div_ceil(MIB),
            self.bytes.conn_entries,
            self.bytes.conns.div_ceil(MIB),
            self.bytes.persist.div_ceil(MIB),
            self.available / MIB,
        )
    }
}

impl std::error::Error for TablesTooBig {}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Errors when the tables for `conn_table_size` exceed `available` bytes.
pub fn check_fits(conn_table_size: u32, available: u64) -> Result<(), TablesTooBig> {
    let bytes = TableBytes::of(conn_table_size);
    if bytes.total() > available {
        return Err(TablesTooBig {
            conn_table_size,
            bytes,
            available,
        });
    }
    Ok(())
}

/// [`check_fits`] against this machine's /proc/meminfo; when that cannot be
/// read, the kernel's own refusal (if any) is what the user gets.
pub fn check_fits_here(conn_table_size: u32) -> Result<(), TablesTooBig> {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_available(&text));
    match available {
        Some(available) => check_fits(conn_table_size, available),
        None => Ok(()),
    }
}

/// What a failed load of the eBPF object means, from the errno in its
/// chain: only a cause the errno tells, else none.
pub fn load_hint(err: &(dyn std::error::Error + 'static), conn_table_size: u32) -> Option<String> {
    let errno = std::iter::successors(Some(err), |e| e.source())
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error);
    match errno {
        Some(libc::EPERM | libc::EACCES) => {
            Some("not permitted: needs root or CAP_BPF + CAP_NET_ADMIN".to_owned())
        }
        Some(libc::ENOMEM | libc::E2BIG) => {
            let bytes = TableBytes::of(conn_table_size);
            Some(format!(
                "the kernel could not allocate a map; the flow tables of conn_table_size {conn_table_size} take {} MiB",
                bytes.total().div_ceil(MIB)
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str =
        "MemTotal:       16303412 kB\nMemFree:         1000000 kB\nMemAvailable:    2097152 kB\n";

    #[test]
    fn reads_mem_available() {
        assert_eq!(mem_available(MEMINFO), Some(2 << 30));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn the_default_table_costs_about_281_mib() {
        // 4 Mi entries of 64 bytes, 256 Ki templates of about 100 bytes.
        let b = TableBytes::of(4_194_304);
        assert_eq!(b.conns, 256 * MIB);
        assert_eq!(b.persist, 262_144 * 104);
    }

    #[test]
    fn a_table_larger_than_memory_says_what_it_needs() {
        let available = mem_available(MEMINFO).unwrap();
        assert_eq!(check_fits(4_194_304, available), Ok(()));
        let err = check_fits(1 << 26, available).unwrap_err();
        assert_eq!(
            err.to_string(),
            "global.conn_table_size 67108864 needs 4512 MiB (connection table: 67108864 entries of \
             64 bytes, 4096 MiB; persistence templates: 416 MiB) but only 2048 MiB of memory is \
             available (MemAvailable in /proc/meminfo); lower conn_table_size or free memory"
        );
    }

    #[test]
    fn a_load_error_blames_only_what_its_errno_says() {
        let io = |errno| std::io::Error::from_raw_os_error(errno);
        assert!(
            load_hint(&io(libc::EPERM), 1024)
                .unwrap()
                .contains("CAP_BPF")
        );
        let enomem = load_hint(&io(libc::ENOMEM), 1 << 26).unwrap();
        assert!(enomem.contains("could not allocate"), "{enomem}");
        assert!(!enomem.contains("CAP_"), "{enomem}");
        assert_eq!(load_hint(&io(libc::EINVAL), 1024), None);
    }
}
