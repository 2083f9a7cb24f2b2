//! Pass two: every delta rebuilt from its base, on every core. Each worker takes
//! the next whole object that has deltas and walks its tree of deltas depth
//! first, reading entries back from the pack file with `pread`. Only the chain
//! being walked holds object data, under a budget: over it, the oldest bases
//! are dropped and rebuilt from the chain when needed again, as git does.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use flate2::{Decompress, FlushDecompress, Status};

use super::links::LinkReader;
use super::receive::{Header, REPORT_EVERY, Slot, Table, parse_header};
use super::{Counts, IndexError, Kind, Oid, Options, delta, object_id};

/// Reads from the pack file in pieces of this size.
pub(super) const CHUNK: usize = 64 << 10;

/// Resolves the deltas that hang below the whole objects among `roots`.
pub(super) fn resolve(
    pack: &File,
    table: &mut Table,
    roots: Range<u32>,
    options: &Options,
    progress: &(dyn Fn(Counts) + Sync),
) -> Result<(), IndexError> {
    let known = table.len() - u32::try_from(table.unresolved()).unwrap_or(0);
    let slots = std::mem::take(&mut table.slots);
    let links = std::mem::take(&mut table.links);
    let claimed = vec![0; slots.len().div_ceil(64)];
    let shared = Shared {
        pack,
        table,
        slots: Mutex::new(Slots {
            slots,
            claimed,
            links,
            lfs_candidates: table.lfs_candidates,
        }),
        note_links: options.self_contained,
        next: AtomicU32::new(roots.start),
        end: roots.end,
        failed: AtomicBool::new(false),
        known: AtomicU32::new(known),
        progress,
        limit: options.max_object_bytes,
        budget: options.base_budget,
    };
    // One root (a thin pack's appended base) has one walk: no threads for it.
    let threads = options.threads.clamp(1, roots.len().max(1));
    let results: Vec<Result<(), IndexError>> = if threads == 1 {
        vec![Worker::new(&shared).run()]
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| Worker::new(&shared).run()))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };
    let slots = shared
        .slots
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    table.slots = slots.slots;
    table.links = slots.links;
    table.lfs_candidates = slots.lfs_candidates;
    results.into_iter().collect()
}

/// What the workers share: the table is read-only while they run; the slots,
/// where resolved ids go, are behind a lock taken once per object.
struct Shared<'a> {
    pack: &'a File,
    table: &'a Table,
    slots: Mutex<Slots>,
    /// Whether the links of rebuilt objects are noted ([`Table::links`]).
    note_links: bool,
    next: AtomicU32,
    end: u32,
    failed: AtomicBool,
    known: AtomicU32,
    progress: &'a (dyn Fn(Counts) + Sync),
    limit: u64,
    budget: usize,
}

/// The entries' objects, and which deltas a worker has taken on: two
/// workers may reach the same delta (through two copies of its base in one
/// pack), and only the first may rebuild it.
struct Slots {
    slots: Vec<Slot>,
    /// One bit per entry.
    claimed: Vec<u64>,
    /// [`Table::links`], while the workers add to it.
    links: std::collections::HashSet<Oid>,
    /// [`Table::lfs_candidates`], while the workers add to it.
    lfs_candidates: u32,
}

impl Slots {
    /// Takes delta `i` on; false if a worker already did.
    fn claim(&mut self, i: u32) -> bool {
        let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
        let free = self.claimed[word] & bit == 0;
        self.claimed[word] |= bit;
        free
    }
}

impl Shared<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, i: u32) -> Slot {
        self.lock().slots[i as usize]
    }

    fn record(&self, i: u32, oid: Oid, kind: Kind, links: Vec<Oid>, lfs_candidate: bool) {
        let mut slots = self.lock();
        slots.slots[i as usize] = Slot {
            oid,
            kind: Some(kind),
            whole: false,
        };
        slots.links.extend(links);
        slots.lfs_candidates += u32::from(lfs_candidate);
        drop(slots);
        let known = self.known.fetch_add(1, Ordering::Relaxed) + 1;
        if known.is_multiple_of(REPORT_EVERY) {
            let table = self.table;
            (self.progress)(Counts {
                total: table.len(),
                received: table.len(),
                indexed: known,
            });
        }
    }

    /// The deltas whose base is entry `i` (with id `oid`), taken on by the
    /// caller. A ref-delta that a worker has resolved or taken on already is
    /// reached from a second base: its base is in the pack twice, or the
    /// delta rebuilds its own base. git refuses such a pack, and so do we.
    fn children(&self, i: u32, oid: &Oid) -> Result<Vec<u32>, IndexError> {
        let table = self.table;
        let by_offset = table.ofs_deltas_on(table.offsets[i as usize]);
        let by_id = table.ref_deltas_on(oid);
        let mut slots = self.lock();
        let mut found: Vec<u32> = by_offset
            .iter()
            .map(|(_, child)| *child)
            .filter(|child| slots.slots[*child as usize].kind.is_none() && slots.claim(*child))
            .collect();
        for &(_, child) in by_id {
            if slots.slots[child as usize].kind.is_some() || !slots.claim(child) {
                return Err(IndexError::malformed(
                    table.offsets[child as usize],
                    format!(
                        "a ref-delta reached from two bases: {} is in the pack twice, \
                         or the delta rebuilds its own base (git: \"already resolved\")",
                        hex::encode(oid)
                    ),
                ));
            }
            found.push(child);
        }
        Ok(found)
    }
}

/// A base on the chain being walked, and where its walk is.
struct Frame {
    entry: u32,
    kind: Kind,
    data: Option<Vec<u8>>,
    children: Vec<u32>,
    next: usize,
}

struct Worker<'a> {
    shared: &'a Shared<'a>,
    entries: EntryReader,
    stack: Vec<Frame>,
    /// Bytes of object data held by `stack`.
    held: usize,
}

impl<'a> Worker<'a> {
    fn new(shared: &'a Shared<'a>) -> Self {
        Self {
            shared,
            entries: EntryReader::new(),
            stack: Vec::new(),
            held: 0,
        }
    }

    fn run(mut self) -> Result<(), IndexError> {
        let shared = self.shared;
        while !shared.failed.load(Ordering::Relaxed) {
            let i = shared.next.fetch_add(1, Ordering::Relaxed);
            if i >= shared.end {
                break;
            }
            let slot = shared.slot(i);
            // A delta another worker has resolved by now is no root: its
            // entry's bytes are the delta, not the object.
            let (Some(kind), true) = (slot.kind, slot.whole) else {
                continue;
            };
            if let Err(e) = self.walk(i, kind, &slot.oid) {
                shared.failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Resolves every delta below the whole object `root`.
    fn walk(&mut self, root: u32, kind: Kind, oid: &Oid) -> Result<(), IndexError> {
        let children = self.shared.children(root, oid)?;
        if children.is_empty() {
            return Ok(());
        }
        self.stack.clear();
        self.held = 0;
        self.stack.push(Frame {
            entry: root,
            kind,
            data: None,
            children,
            next: 0,
        });
        while let Some(top) = self.stack.last_mut() {
            let Some(&child) = top.children.get(top.next) else {
                let done = self.stack.pop();
                self.held -= done.and_then(|f| f.data).map_or(0, |d| d.len());
                continue;
            };
            top.next += 1;
            let last = top.next == top.children.len();
            let kind = top.kind;
            let result = self.rebuild(child)?;
            if last {
                self.drop_data(self.stack.len() - 1);
            }
            let offset = self.shared.table.offsets[child as usize];
            let oid = object_id(kind, &result, offset)?;
            let links = self.links_of(kind, &result, offset)?;
            let lfs_candidate = super::may_be_lfs_pointer(kind, result.len() as u64, &result);
            self.shared.record(child, oid, kind, links, lfs_candidate);
            let children = self.shared.children(child, &oid)?;
            if !children.is_empty() {
                self.held += result.len();
                self.stack.push(Frame {
                    entry: child,
                    kind,
                    data: Some(result),
                    children,
                    next: 0,
                });
                self.keep_within_budget();
            }
        }
        Ok(())
    }

    /// What a rebuilt object names, if the pack must be self-contained.
    fn links_of(&self, kind: Kind, data: &[u8], offset: u64) -> Result<Vec<Oid>, IndexError> {
        let mut found = Vec::new();
        let Some(mut reader) = LinkReader::new(kind).filter(|_| self.shared.note_links) else {
            return Ok(found);
        };
        reader
            .feed(data, &mut |oid| found.push(oid))
            .and_then(|()| reader.finish())
            .map_err(|why| IndexError::malformed(offset, why))?;
        Ok(found)
    }

    /// The object delta entry `child` builds on the top frame's data.
    fn rebuild(&mut self, child: u32) -> Result<Vec<u8>, IndexError> {
        let top = self.stack.len() - 1;
        self.restore(top)?;
        let delta = self.read(child)?;
        let base = self.stack[top].data.as_deref().unwrap_or_default();
        let offset = self.shared.table.offsets[child as usize];
        delta::apply(base, &delta, self.shared.limit)
            .map_err(|problem| IndexError::malformed(offset, problem))
    }

    /// Makes frame `k`'s data present again, rebuilding it from the nearest
    /// frame below that still has its own (or from the root's entry). The
    /// frames rebuilt on the way keep their data as the budget allows, the
    /// ones nearest `k` first: the walk goes back up the chain from `k`, so
    /// they are the next ones needed, and a chain much longer than the budget
    /// is rebuilt once per budget's worth of frames, not once per frame (git
    /// keeps them the same way).
    fn restore(&mut self, k: usize) -> Result<(), IndexError> {
        if self.stack[k].data.is_some() {
            return Ok(());
        }
        let from = match self.stack[..k].iter().rposition(|f| f.data.is_some()) {
            Some(j) => j,
            None => {
                let data = self.read(self.stack[0].entry)?;
                self.set_data(0, data);
                0
            }
        };
        let mut oldest = from;
        for m in from + 1..=k {
            let delta = self.read(self.stack[m].entry)?;
            let base = self.stack[m - 1].data.as_deref().unwrap_or_default();
            let offset = self.shared.table.offsets[self.stack[m].entry as usize];
            let data = delta::apply(base, &delta, self.shared.limit)
                .map_err(|problem| IndexError::malformed(offset, problem))?;
            self.set_data(m, data);
            while self.held > self.shared.budget && oldest < m {
                self.drop_data(oldest);
                oldest += 1;
            }
        }
        Ok(())
    }

    fn set_data(&mut self, k: usize, data: Vec<u8>) {
        self.held += data.len();
        self.stack[k].data = Some(data);
    }

    fn drop_data(&mut self, k: usize) {
        if let Some(data) = self.stack[k].data.take() {
            self.held -= data.len();
        }
    }

    /// Drops the oldest bases while the chain holds more than the budget; the
    /// top frame's data is needed next and stays.
    fn keep_within_budget(&mut self) {
        let top = self.stack.len() - 1;
        let mut k = 0;
        while self.held > self.shared.budget && k < top {
            self.drop_data(k);
            k += 1;
        }
    }

    /// Entry `i`'s inflated data, read back from the pack file.
    fn read(&mut self, i: u32) -> Result<Vec<u8>, IndexError> {
        let (table, shared) = (self.shared.table, self.shared);
        let start = table.offsets[i as usize];
        let read = self
            .entries
            .read(shared.pack, start, table.end_of(i), shared.limit)?;
        Ok(read.1)
    }
}

/// Reads entries back from a pack file with `pread`, through one buffer and
/// one inflater kept between entries.
pub(super) struct EntryReader {
    z: Decompress,
    chunk: Vec<u8>,
}

impl EntryReader {
    pub(super) fn new() -> Self {
        Self {
            z: Decompress::new(true),
            chunk: vec![0; CHUNK],
        }
    }

    /// The entry at `start` of `pack` (which ends by `end`): its header and
    /// inflated data (a delta's instructions, for a delta), refused past
    /// `limit` bytes before any is set aside.
    pub(super) fn read(
        &mut self,
        pack: &File,
        start: u64,
        end: u64,
        limit: u64,
    ) -> Result<(Header, Vec<u8>), IndexError> {
        let io = IndexError::io("reading the pack back");
        let mut len = self.fill(pack, start, end).map_err(io)?;
        let mut pos = 0;
        let header = parse_header(
            || {
                let byte = self.chunk[..len].get(pos).copied();
                pos += 1;
                byte.ok_or_else(|| IndexError::malformed(start, "entry header is cut short"))
            },
            start,
        )?;
        if header.size > limit {
            return Err(IndexError::TooLarge {
                offset: start,
                size: header.size,
                limit,
            });
        }
        let size = usize::try_from(header.size)
            .map_err(|_| IndexError::malformed(start, "entry too large"))?;
        let mut out = Vec::with_capacity(size + 1);
        let mut at = start + pos as u64;
        self.z.reset(true);
        loop {
            let read = self.z.total_in();
            let status = self
                .z
                .decompress_vec(&self.chunk[pos..len], &mut out, FlushDecompress::None)
                .map_err(|e| IndexError::malformed(start, format!("zlib: {e}")))?;
            let used = (self.z.total_in() - read) as usize;
            pos += used;
            at += used as u64;
            if status == Status::StreamEnd || out.len() > size {
                break;
            }
            if pos == len {
                len = self
                    .fill(pack, at, end)
                    .map_err(IndexError::io("reading the pack back"))?;
                pos = 0;
                if len == 0 {
                    break;
                }
            } else if used == 0 {
                break;
            }
        }
        if out.len() != size {
            return Err(IndexError::malformed(start, "entry changed on disk"));
        }
        Ok((header, out))
    }

    /// Reads `pack` from `at` (up to `end`) into `chunk`; how much it read.
    fn fill(&mut self, pack: &File, at: u64, end: u64) -> std::io::Result<usize> {
        let n = self
            .chunk
            .len()
            .min(usize::try_from(end - at).unwrap_or(usize::MAX));
        pack.read_exact_at(&mut self.chunk[..n], at)?;
        Ok(n)
    }
}
