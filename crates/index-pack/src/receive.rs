//! Pass one: the pack stream as it arrives. Every byte goes to the temporary
//! pack file and the pack checksum; every entry's header is checked, its zlib
//! data inflated (and thrown away: only whole objects are hashed here, deltas
//! wait for pass two), and its offset, CRC and id noted in the [`Table`].

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use flate2::write::ZlibEncoder;
use flate2::{Compression, Decompress, FlushDecompress, Status};

use super::links::LinkReader;
use super::{Counts, IndexError, Kind, Oid, delta, finish_id, object_hasher};

/// Reads from the network in pieces of this size.
const CHUNK: usize = 64 << 10;
/// Progress is reported once per this many objects.
pub(super) const REPORT_EVERY: u32 = 1024;
/// An honest pack's header count is reserved up front; a lying one gets at most this.
const MAX_RESERVED: u32 = 1 << 22;

/// What the indexer knows of each entry, by position in the pack. The whole
/// footprint of an index run: 34 bytes per object plus 16 or 24 per delta.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub offsets: Vec<u64>,
    pub crcs: Vec<u32>,
    pub slots: Vec<Slot>,
    /// Offset-deltas as (base offset, entry), sorted.
    pub ofs_deltas: Vec<(u64, u32)>,
    /// Ref-deltas as (base id, entry), sorted.
    pub ref_deltas: Vec<(Oid, u32)>,
    /// Where the entries end and the trailer starts.
    pub end: u64,
    pub checksum: Oid,
    /// The objects the pack's objects name, when it must be self-contained
    /// (`Options::self_contained`); empty otherwise.
    pub links: HashSet<Oid>,
    /// Objects that may be Git LFS pointers ([`super::may_be_lfs_pointer`]).
    pub lfs_candidates: u32,
}

/// An entry's object: its id and kind once known; a delta's stay `None` until
/// it is resolved.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub oid: Oid,
    pub kind: Option<Kind>,
    /// The entry holds its object whole, not as a delta: only such an entry
    /// can start a walk, since its bytes are the object.
    pub whole: bool,
}

impl Table {
    pub fn len(&self) -> u32 {
        // Entries are counted by the header's u32, and appended bases replace
        // entries' missing bases one for one at most.
        u32::try_from(self.offsets.len()).unwrap_or(u32::MAX)
    }

    /// Where entry `i`'s bytes end.
    pub fn end_of(&self, i: u32) -> u64 {
        self.offsets
            .get(i as usize + 1)
            .copied()
            .unwrap_or(self.end)
    }

    pub fn unresolved(&self) -> usize {
        self.slots.iter().filter(|s| s.kind.is_none()).count()
    }

    /// The bases named by unresolved ref-deltas, the ones a thin pack left
    /// out, in the order their first delta comes in the pack (git's order:
    /// a sender writes a base before the deltas on it, so appending bases in
    /// this order never appends one that a delta in the pack would rebuild).
    pub fn missing_bases(&self) -> Vec<Oid> {
        let mut waiting: Vec<(u32, Oid)> = self
            .ref_deltas
            .iter()
            .filter(|(_, entry)| self.slots[*entry as usize].kind.is_none())
            .map(|(oid, entry)| (*entry, *oid))
            .collect();
        waiting.sort_unstable();
        let mut seen = HashSet::new();
        waiting
            .into_iter()
            .filter_map(|(_, oid)| seen.insert(oid).then_some(oid))
            .collect()
    }

    /// Every entry, in the order of their ids (the index's order).
    pub fn by_id(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.len()).collect();
        order.sort_unstable_by_key(|&i| self.slots[i as usize].oid);
        order
    }

    /// The kind of the object `oid`, if an entry holds it; `by_id` as made
    /// by [`Table::by_id`].
    pub fn find(&self, by_id: &[u32], oid: &Oid) -> Option<Kind> {
        let at = by_id
            .binary_search_by(|&i| self.slots[i as usize].oid.cmp(oid))
            .ok()?;
        self.slots[by_id[at] as usize].kind
    }

    /// Whether a delta on `oid` is still waiting for its base.
    pub fn waits_for(&self, oid: &Oid) -> bool {
        self.ref_deltas_on(oid)
            .iter()
            .any(|(_, entry)| self.slots[*entry as usize].kind.is_none())
    }

    /// The offset-deltas whose base starts at `offset`.
    pub fn ofs_deltas_on(&self, offset: u64) -> &[(u64, u32)] {
        equal_range(&self.ofs_deltas, |(base, _)| base.cmp(&offset))
    }

    /// The ref-deltas whose base is `oid`.
    pub fn ref_deltas_on(&self, oid: &Oid) -> &[(Oid, u32)] {
        equal_range(&self.ref_deltas, |(base, _)| base.cmp(oid))
    }

    /// Records a whole object appended at the end (`encoded` as written).
    pub fn push_whole(&mut self, encoded: &[u8], oid: Oid, kind: Kind) {
        self.offsets.push(self.end);
        self.crcs.push(crc32fast::hash(encoded));
        self.slots.push(Slot {
            oid,
            kind: Some(kind),
            whole: true,
        });
        self.end += encoded.len() as u64;
    }
}

/// The run of `sorted` that `cmp` finds equal.
fn equal_range<T>(sorted: &[T], cmp: impl Fn(&T) -> std::cmp::Ordering) -> &[T] {
    let start = sorted.partition_point(|x| cmp(x).is_lt());
    let len = sorted[start..].partition_point(|x| cmp(x).is_eq());
    &sorted[start..start + len]
}

/// An entry's header: what it holds and the size of its inflated data.
#[derive(Debug)]
pub(super) struct Header {
    pub what: What,
    pub size: u64,
}

#[derive(Debug)]
pub(super) enum What {
    Whole(Kind),
    OfsDelta { distance: u64 },
    RefDelta(Oid),
}

/// The shift of the eighth and last size byte git reads after an entry's first.
const MAX_SIZE_SHIFT: u32 = 4 + 7 * 7;

/// Parses an entry header from `next` (one byte per call); `at` is the entry's
/// offset, for errors.
pub(super) fn parse_header(
    mut next: impl FnMut() -> Result<u8, IndexError>,
    at: u64,
) -> Result<Header, IndexError> {
    let first = next()?;
    let code = (first >> 4) & 0x07;
    let mut size = u64::from(first & 0x0f);
    let mut shift = 4;
    let mut byte = first;
    while byte & 0x80 != 0 {
        // git's readers stop at eight size bytes after the first ("bad
        // object header"): a pack with more would index, then fail fsck.
        if shift > MAX_SIZE_SHIFT {
            return Err(IndexError::malformed(
                at,
                "bad object header: more than 8 size bytes follow the first",
            ));
        }
        byte = next()?;
        let part = u64::from(byte & 0x7f);
        if (part << shift) >> shift != part {
            return Err(IndexError::malformed(at, "entry size overflows"));
        }
        size |= part << shift;
        shift += 7;
    }
    let what = match code {
        6 => {
            let mut byte = next()?;
            let mut distance = u64::from(byte & 0x7f);
            while byte & 0x80 != 0 {
                byte = next()?;
                distance = distance
                    .checked_add(1)
                    .and_then(|d| d.checked_mul(128))
                    .ok_or_else(|| IndexError::malformed(at, "delta base offset overflows"))?
                    | u64::from(byte & 0x7f);
            }
            What::OfsDelta { distance }
        }
        7 => {
            let mut oid = [0; 20];
            for byte in &mut oid {
                *byte = next()?;
            }
            What::RefDelta(oid)
        }
        code => What::Whole(
            Kind::from_code(code)
                .ok_or_else(|| IndexError::malformed(at, format!("unknown entry type {code}")))?,
        ),
    };
    Ok(Header { what, size })
}

/// A whole object as a pack entry: header and zlib data.
pub(super) fn encode_whole(kind: Kind, data: &[u8]) -> io::Result<Vec<u8>> {
    let size = data.len() as u64;
    let mut out = vec![((kind as u8) << 4) | (size & 0x0f) as u8];
    let mut rest = size >> 4;
    while rest > 0 {
        if let Some(last) = out.last_mut() {
            *last |= 0x80;
        }
        out.push((rest & 0x7f) as u8);
        rest >>= 7;
    }
    let mut z = ZlibEncoder::new(out, Compression::default());
    z.write_all(data)?;
    z.finish()
}

/// Parses the pack from `input`, writing it to `file`; notes the links of
/// whole objects if `links`.
pub(super) fn receive(
    input: impl Read,
    file: &File,
    limit: u64,
    links: bool,
    progress: &(dyn Fn(Counts) + Sync),
) -> Result<Table, IndexError> {
    let mut stream = Stream {
        input,
        buf: vec![0; CHUNK],
        at: 0,
        len: 0,
        out: BufWriter::with_capacity(CHUNK, file),
        offset: 0,
        pack_hash: sha1dc::Hasher::new(),
        crc: crc32fast::Hasher::new(),
    };
    let total = stream.pack_header()?;
    let mut receiving = Receiving {
        stream,
        z: Decompress::new(true),
        scratch: vec![0; CHUNK],
        table: Table::default(),
        limit,
        links,
        counts: Counts {
            total,
            ..Counts::default()
        },
    };
    let reserve = total.min(MAX_RESERVED) as usize;
    receiving.table.offsets.reserve_exact(reserve);
    receiving.table.crcs.reserve_exact(reserve);
    receiving.table.slots.reserve_exact(reserve);
    progress(receiving.counts);
    for _ in 0..total {
        receiving.entry()?;
        if receiving.counts.received.is_multiple_of(REPORT_EVERY) {
            progress(receiving.counts);
        }
    }
    progress(receiving.counts);
    receiving.finish()
}

struct Receiving<'f, R> {
    stream: Stream<'f, R>,
    z: Decompress,
    scratch: Vec<u8>,
    table: Table,
    limit: u64,
    links: bool,
    counts: Counts,
}

impl<R: Read> Receiving<'_, R> {
    fn entry(&mut self) -> Result<(), IndexError> {
        let offset = self.stream.offset;
        self.stream.crc = crc32fast::Hasher::new();
        let header = parse_header(|| self.stream.byte(), offset)?;
        self.check_size(offset, header.size)?;
        let index = self.table.len();
        let slot = match header.what {
            What::Whole(kind) => {
                let mut hasher = object_hasher(kind, header.size);
                let mut reader = LinkReader::new(kind).filter(|_| self.links);
                let (mut found, mut malformed) = (Vec::new(), None);
                let mut start = super::ObjectStart::default();
                self.inflate(header.size, offset, |data| {
                    hasher.update(data);
                    start.feed(data);
                    if let (Some(reader), None) = (&mut reader, malformed) {
                        malformed = reader.feed(data, &mut |oid| found.push(oid)).err();
                    }
                })?;
                if let Some(why) = malformed.or_else(|| reader.and_then(|r| r.finish().err())) {
                    return Err(IndexError::malformed(offset, why));
                }
                self.table.links.extend(found);
                if super::may_be_lfs_pointer(kind, header.size, start.bytes()) {
                    self.table.lfs_candidates += 1;
                }
                self.counts.indexed += 1;
                Slot {
                    oid: finish_id(hasher, offset)?,
                    kind: Some(kind),
                    whole: true,
                }
            }
            What::OfsDelta { distance } => {
                let base = offset
                    .checked_sub(distance)
                    .filter(|_| distance > 0)
                    .filter(|base| self.table.offsets.binary_search(base).is_ok())
                    .ok_or_else(|| IndexError::malformed(offset, "delta base is not an entry"))?;
                self.delta(header.size, offset)?;
                self.table.ofs_deltas.push((base, index));
                unresolved()
            }
            What::RefDelta(base) => {
                self.delta(header.size, offset)?;
                self.table.ref_deltas.push((base, index));
                unresolved()
            }
        };
        let crc = std::mem::replace(&mut self.stream.crc, crc32fast::Hasher::new()).finalize();
        self.table.offsets.push(offset);
        self.table.crcs.push(crc);
        self.table.slots.push(slot);
        self.counts.received += 1;
        Ok(())
    }

    fn check_size(&self, offset: u64, size: u64) -> Result<(), IndexError> {
        if size > self.limit {
            return Err(IndexError::TooLarge {
                offset,
                size,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Inflates a delta, checking the size of the object it claims to build:
    /// pass two sets that much memory aside.
    fn delta(&mut self, size: u64, offset: u64) -> Result<(), IndexError> {
        let mut head = [0u8; 20];
        let mut kept = 0;
        self.inflate(size, offset, |data| {
            let n = (head.len() - kept).min(data.len());
            head[kept..kept + n].copy_from_slice(&data[..n]);
            kept += n;
        })?;
        let (_, result) = delta::sizes(&head[..kept])
            .ok_or_else(|| IndexError::malformed(offset, "delta header is cut short"))?;
        self.check_size(offset, result)
    }

    /// Inflates one entry's zlib data, which must come to exactly `size` bytes.
    fn inflate(
        &mut self,
        size: u64,
        offset: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), IndexError> {
        self.z.reset(true);
        loop {
            let input = self.stream.available()?;
            let (read, written) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(input, &mut self.scratch, FlushDecompress::None)
                .map_err(|e| IndexError::malformed(offset, format!("zlib: {e}")))?;
            let used = (self.z.total_in() - read) as usize;
            let made = (self.z.total_out() - written) as usize;
            if self.z.total_out() > size {
                return Err(IndexError::malformed(
                    offset,
                    "more data than the header says",
                ));
            }
            sink(&self.scratch[..made]);
            self.stream.consume(used)?;
            if status == Status::StreamEnd {
                break;
            }
            if used == 0 && made == 0 {
                return Err(IndexError::malformed(offset, "zlib data makes no progress"));
            }
        }
        if self.z.total_out() != size {
            return Err(IndexError::malformed(
                offset,
                "less data than the header says",
            ));
        }
        Ok(())
    }

    /// Checks the trailer and that nothing follows it.
    fn finish(mut self) -> Result<Table, IndexError> {
        self.table.end = self.stream.offset;
        let computed: Oid = std::mem::replace(&mut self.stream.pack_hash, sha1dc::Hasher::new())
            .finalize()
            .map_err(|_| IndexError::Checksum)?
            .into();
        let mut trailer = [0u8; 20];
        for byte in &mut trailer {
            *byte = self.stream.byte()?;
        }
        if trailer != computed {
            return Err(IndexError::Checksum);
        }
        if self.stream.at < self.stream.len || self.stream.fill()? > 0 {
            return Err(IndexError::malformed(
                self.stream.offset,
                "data after the pack's end",
            ));
        }
        self.stream
            .out
            .flush()
            .map_err(IndexError::io("writing the pack"))?;
        self.table.checksum = trailer;
        self.table.ofs_deltas.sort_unstable();
        self.table.ref_deltas.sort_unstable();
        Ok(self.table)
    }
}

fn unresolved() -> Slot {
    Slot {
        oid: [0; 20],
        kind: None,
        whole: false,
    }
}

/// The input, copied to the pack file, the pack checksum and the entry's CRC
/// as it is consumed.
struct Stream<'f, R> {
    input: R,
    buf: Vec<u8>,
    at: usize,
    len: usize,
    out: BufWriter<&'f File>,
    offset: u64,
    pack_hash: sha1dc::Hasher,
    crc: crc32fast::Hasher,
}

impl<R: Read> Stream<'_, R> {
    /// Reads the pack header; the number of entries it announces.
    fn pack_header(&mut self) -> Result<u32, IndexError> {
        let mut word = || -> Result<u32, IndexError> {
            let mut bytes = [0u8; 4];
            for byte in &mut bytes {
                *byte = self.byte()?;
            }
            Ok(u32::from_be_bytes(bytes))
        };
        if word()?.to_be_bytes() != *b"PACK" {
            return Err(IndexError::malformed(0, "not a pack (no PACK signature)"));
        }
        match word()? {
            2 | 3 => word(),
            version => Err(IndexError::malformed(
                4,
                format!("unsupported pack version {version}"),
            )),
        }
    }

    /// Unconsumed input, reading more when there is none; the pack ending
    /// here is an error.
    fn available(&mut self) -> Result<&[u8], IndexError> {
        if self.at == self.len && self.fill()? == 0 {
            return Err(IndexError::malformed(self.offset, "the pack ends early"));
        }
        Ok(&self.buf[self.at..self.len])
    }

    /// Reads the next piece of input into the (consumed) buffer; its length.
    fn fill(&mut self) -> Result<usize, IndexError> {
        loop {
            match self.input.read(&mut self.buf) {
                Ok(n) => {
                    (self.at, self.len) = (0, n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(IndexError::io("reading the pack")(e)),
            }
        }
    }

    fn byte(&mut self) -> Result<u8, IndexError> {
        let byte = self.available()?[0];
        self.consume(1)?;
        Ok(byte)
    }

    fn consume(&mut self, n: usize) -> Result<(), IndexError> {
        let bytes = &self.buf[self.at..self.at + n];
        self.out
            .write_all(bytes)
            .map_err(IndexError::io("writing the pack"))?;
        self.pack_hash.update(bytes);
        self.crc.update(bytes);
        self.at += n;
        self.offset += n as u64;
        Ok(())
    }
}
