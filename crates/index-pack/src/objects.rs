//! A repository's own objects, as the [`Bases`] a thin pack leaves out: its
//! loose objects and the entries of its packs, found through their `.idx`
//! and read with `pread`, with this crate's own parsing. The indexer then
//! needs no other git library (the child that parses what a remote sent
//! links no libgit2, libssh2 or OpenSSL).
//!
//! Every object read is checked against its id before it is handed out: a
//! damaged base would otherwise turn into objects under wrong ids.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::receive::What;
use crate::resolve::EntryReader;
use crate::{Bases, Kind, Oid, delta, object_id};

/// The longest delta chain followed, past git's default depth of 50 and its
/// `--depth` limit of 4095: a longer one is taken for a cycle.
const MAX_CHAIN: usize = 10_000;

/// The objects of the repository at `objects_dir`; its packs are listed on
/// the first base asked for (an initial pull asks for none).
#[derive(Debug)]
pub struct RepositoryObjects {
    objects_dir: PathBuf,
    /// The largest object read.
    limit: u64,
    packs: OnceLock<Vec<Pack>>,
}

#[derive(Debug)]
struct Pack {
    pack: File,
    /// The pack file's length: no entry reaches past it.
    end: u64,
    idx: File,
    /// The `.idx`'s fan-out table: how many ids start with each byte or less.
    fanout: [u32; 256],
}

/// Where the `.idx` tables start: after the magic, the version and the
/// fan-out table.
const IDS_AT: u64 = 8 + 256 * 4;

impl RepositoryObjects {
    pub fn new(objects_dir: &Path, limit: u64) -> Self {
        Self {
            objects_dir: objects_dir.to_path_buf(),
            limit,
            packs: OnceLock::new(),
        }
    }

    fn packs(&self) -> &[Pack] {
        self.packs.get_or_init(|| {
            let Ok(entries) = std::fs::read_dir(self.objects_dir.join("pack")) else {
                return Vec::new();
            };
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == "idx"))
                .filter_map(|idx| Pack::open(&idx))
                .collect()
        })
    }

    /// Which pack holds `oid`, and where.
    fn locate(&self, oid: &Oid) -> Option<(&Pack, u64)> {
        self.packs()
            .iter()
            .find_map(|pack| Some((pack, pack.offset_of(oid)?)))
    }

    /// `oid` as stored: a packed entry's delta chain is followed down to its
    /// base (through other packs and loose objects for a ref-delta's), then
    /// rebuilt upwards. No recursion: a cycle ends at [`MAX_CHAIN`].
    fn rebuild(&self, oid: &Oid) -> Option<(Kind, Vec<u8>)> {
        let mut entries = EntryReader::new();
        let mut deltas = Vec::new();
        let mut wanted = *oid;
        let mut place = self.locate(&wanted);
        let (kind, mut data) = loop {
            if deltas.len() > MAX_CHAIN {
                return None;
            }
            let Some((pack, at)) = place else {
                break self.read_loose(&wanted)?;
            };
            let (header, data) = entries.read(&pack.pack, at, pack.end, self.limit).ok()?;
            match header.what {
                What::Whole(kind) => break (kind, data),
                What::OfsDelta { distance } => {
                    deltas.push(data);
                    let base = at.checked_sub(distance).filter(|_| distance > 0)?;
                    place = Some((pack, base));
                }
                What::RefDelta(base) => {
                    deltas.push(data);
                    wanted = base;
                    place = self.locate(&wanted);
                }
            }
        };
        for delta in deltas.iter().rev() {
            data = delta::apply(&data, delta, self.limit).ok()?;
        }
        Some((kind, data))
    }

    fn read_loose(&self, oid: &Oid) -> Option<(Kind, Vec<u8>)> {
        let hex = hex::encode(oid);
        let path = self.objects_dir.join(&hex[..2]).join(&hex[2..]);
        let mut inflated = Vec::new();
        let file = File::open(path).ok()?;
        // One byte over the limit's header and data shows an object too large.
        let most = self.limit.saturating_add(64);
        flate2::read::ZlibDecoder::new(file)
            .take(most)
            .read_to_end(&mut inflated)
            .ok()?;
        let nul = inflated.iter().position(|&b| b == 0)?;
        let header = std::str::from_utf8(&inflated[..nul]).ok()?;
        let (name, size) = header.split_once(' ')?;
        let (kind, size) = (Kind::from_name(name)?, size.parse::<usize>().ok()?);
        let data = inflated.split_off(nul + 1);
        (size == data.len()).then_some((kind, data))
    }
}

impl Bases for RepositoryObjects {
    /// `oid`'s kind and data, checked against its id.
    fn find(&self, oid: &Oid) -> Option<(Kind, Vec<u8>)> {
        let (kind, data) = self.rebuild(oid)?;
        (object_id(kind, &data, 0).ok()? == *oid).then_some((kind, data))
    }
}

impl Pack {
    fn open(idx_path: &Path) -> Option<Self> {
        let idx = File::open(idx_path).ok()?;
        let pack = File::open(idx_path.with_extension("pack")).ok()?;
        let end = pack.metadata().ok()?.len();
        let mut head = [0u8; IDS_AT as usize];
        idx.read_exact_at(&mut head, 0).ok()?;
        // Version 2: "\377tOc", then 2.
        if head[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
            return None;
        }
        let mut fanout = [0u32; 256];
        for (i, count) in fanout.iter_mut().enumerate() {
            let at = 8 + 4 * i;
            *count = u32::from_be_bytes(head[at..at + 4].try_into().ok()?);
        }
        Some(Self {
            pack,
            end,
            idx,
            fanout,
        })
    }

    fn count(&self) -> u64 {
        u64::from(self.fanout[255])
    }

    /// Where `oid` starts in the pack, by a binary search of the `.idx`'s
    /// sorted ids within the range its first byte's fan-out gives.
    fn offset_of(&self, oid: &Oid) -> Option<u64> {
        let first = usize::from(oid[0]);
        let mut low = u64::from(if first == 0 {
            0
        } else {
            self.fanout[first - 1]
        });
        let mut high = u64::from(self.fanout[first]);
        while low < high {
            let mid = low + (high - low) / 2;
            let mut id = [0u8; 20];
            self.idx.read_exact_at(&mut id, IDS_AT + mid * 20).ok()?;
            match id.cmp(oid) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return self.offset(mid),
            }
        }
        None
    }

    /// The `i`th id's offset: 31 bits, or an index into the 64-bit table.
    fn offset(&self, i: u64) -> Option<u64> {
        let n = self.count();
        let offsets = IDS_AT + n * 20 + n * 4;
        let mut word = [0u8; 4];
        self.idx.read_exact_at(&mut word, offsets + i * 4).ok()?;
        let small = u32::from_be_bytes(word);
        if small & 0x8000_0000 == 0 {
            return Some(u64::from(small));
        }
        let mut large = [0u8; 8];
        let at = offsets + n * 4 + u64::from(small & 0x7fff_ffff) * 8;
        self.idx.read_exact_at(&mut large, at).ok()?;
        Some(u64::from_be_bytes(large))
    }
}
