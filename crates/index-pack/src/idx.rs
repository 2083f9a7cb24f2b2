//! The pack index, version 2: a fan-out table over the first byte of the ids,
//! the sorted ids, each object's CRC-32 and pack offset (31 bits, or a pointer
//! into a table of 64-bit offsets), the pack checksum and its own checksum.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use super::receive::Table;

const SIGNATURE: [u8; 4] = [0xff, b't', b'O', b'c'];
/// The flag of a 32-bit offset word that points into the 64-bit table.
const LARGE: u64 = 0x8000_0000;

/// Writes the index of `table`, whose entries `order` lists by id. Offsets
/// past `offset32_limit` go to the 64-bit table (those of 2 GiB and more
/// always do), as git's `pack_idx_option.off32_limit`.
pub(super) fn write(
    file: &mut File,
    table: &Table,
    order: &[u32],
    offset32_limit: u64,
) -> io::Result<()> {
    let slots = &table.slots;
    let mut out = Hashing {
        inner: BufWriter::new(file),
        hasher: sha1dc::Hasher::new(),
    };
    out.write_all(&SIGNATURE)?;
    out.write_all(&2u32.to_be_bytes())?;
    let mut fan_out = [0u32; 256];
    for &i in order {
        fan_out[usize::from(slots[i as usize].oid[0])] += 1;
    }
    let mut running = 0;
    for count in fan_out {
        running += count;
        out.write_all(&running.to_be_bytes())?;
    }
    for &i in order {
        out.write_all(&slots[i as usize].oid)?;
    }
    for &i in order {
        out.write_all(&table.crcs[i as usize].to_be_bytes())?;
    }
    let mut large = Vec::new();
    for &i in order {
        let offset = table.offsets[i as usize];
        let word = if offset < LARGE && offset <= offset32_limit {
            offset
        } else {
            large.push(offset);
            LARGE | (large.len() as u64 - 1)
        };
        out.write_all(&(word as u32).to_be_bytes())?;
    }
    for offset in large {
        out.write_all(&offset.to_be_bytes())?;
    }
    out.write_all(&table.checksum)?;
    let checksum: [u8; 20] = out
        .hasher
        .finalize()
        .map_err(|_| io::Error::other("SHA-1 collision in the pack index"))?
        .into();
    out.inner.write_all(&checksum)?;
    out.inner.flush()
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: sha1dc::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
