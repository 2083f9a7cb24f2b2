//! The indexer as the child process the service starts for every fetch (see
//! `sync::packs`, the parent's side): `mirrorhost-index-pack`, or
//! `mirrorhost index-pack` where that is not installed. Its arguments are
//! [`Args`]; standard input brings `tip <id>` lines for the objects the fetch
//! asked for, an empty line, and the pack; standard output carries [`Report`]
//! lines; on failure the exit status is 1 and standard error holds the
//! reason, which the service quotes.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use mirror_index_pack::{Bases, IndexError, Landed, Options, RepositoryObjects, Staged, stage};
pub use mirror_index_pack::{Counts, Indexed, Kind, Oid, temp_prefix};

use super::no_lfs_pointers;
use crate::sync::packs::ChildLimits;

/// Why the child stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    #[error("the service asked about a tip as {0:?}, not `tip <id>`")]
    BadTip(String),
    #[error("the pack indexer was started with {0}")]
    BadArgs(String),
    #[error(
        "this pack indexer speaks protocol {ours}, the service {theirs}: \
         restart the service after an upgrade"
    )]
    Protocol { ours: u32, theirs: String },
}

impl ServeError {
    fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}

/// The subcommand of `mirrorhost` that runs the child.
pub const SUBCOMMAND: &str = "index-pack";

/// The version of what parent and child say to each other (arguments,
/// preamble, reports). The service starts a child from a file an upgrade
/// may have replaced; a child of another protocol refuses to start rather
/// than misread its parent.
pub const PROTOCOL: u32 = 1;

/// What the service tells a child on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub objects_dir: PathBuf,
    pub max_object_bytes: u64,
    pub limits: ChildLimits,
}

impl Args {
    /// The command line, as [`Args::parse`] reads it back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--protocol".into(), PROTOCOL.to_string().into()];
        args.extend(["--objects-dir".into(), self.objects_dir.clone().into()]);
        for (flag, value) in [
            ("--max-object-bytes", self.max_object_bytes),
            ("--max-memory-bytes", self.limits.memory_bytes),
            ("--max-cpu-seconds", self.limits.cpu_seconds),
        ] {
            args.extend([flag.into(), value.to_string().into()]);
        }
        args
    }

    /// Reads what [`Args::to_args`] wrote: each flag once, in any order, the
    /// protocol first checked.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, ServeError> {
        let mut given = std::collections::BTreeMap::new();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let flag = flag.into_string().map_err(|f| {
                ServeError::BadArgs(format!("an argument that is not UTF-8: {f:?}"))
            })?;
            let value = args
                .next()
                .ok_or_else(|| ServeError::BadArgs(format!("{flag} without a value")))?;
            if given.insert(flag.clone(), value).is_some() {
                return Err(ServeError::BadArgs(format!("{flag} twice")));
            }
        }
        let mut take = |flag: &str| {
            given
                .remove(flag)
                .ok_or_else(|| ServeError::BadArgs(format!("no {flag}")))
        };
        let protocol = take("--protocol")?;
        if protocol.to_str() != Some(PROTOCOL.to_string().as_str()) {
            return Err(ServeError::Protocol {
                ours: PROTOCOL,
                theirs: protocol.to_string_lossy().into_owned(),
            });
        }
        let mut number = |flag: &str| {
            let value = take(flag)?;
            value
                .to_str()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ServeError::BadArgs(format!("{flag} {value:?}, not a number")))
        };
        let parsed = Self {
            max_object_bytes: number("--max-object-bytes")?,
            limits: ChildLimits {
                memory_bytes: number("--max-memory-bytes")?,
                cpu_seconds: number("--max-cpu-seconds")?,
            },
            objects_dir: take("--objects-dir")?.into(),
        };
        match given.keys().next() {
            Some(unknown) => Err(ServeError::BadArgs(format!("an unknown flag {unknown}"))),
            None => Ok(parsed),
        }
    }
}

/// The child's whole life: `args` (after the program, and the subcommand if
/// any), the pack served, and the exit status. No log subscriber, no
/// argument parser: the child of every fetch starts as light as it can, and
/// its standard error is the whole answer, which the service quotes.
pub fn child_main(args: impl IntoIterator<Item = OsString>) -> i32 {
    match Args::parse(args).and_then(serve) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("{error}");
            1
        }
    }
}

/// Tips a fetch may ask about; a longer preamble is refused.
const MAX_TIPS: usize = 1 << 22;

/// One line the child writes on its standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// How far it is, every so many objects.
    Progress(Counts),
    /// An asked-about tip the pack holds, and its kind.
    Tip(Oid, Kind),
    /// The pack is in place: the last line.
    Done(Indexed),
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Progress(c) => write!(f, "progress {} {} {}", c.total, c.received, c.indexed),
            Self::Tip(oid, kind) => write!(f, "tip {} {}", hex::encode(oid), kind.name()),
            Self::Done(pack) => write!(f, "pack {} {}", pack.name, pack.objects),
        }
    }
}

impl Report {
    /// The report a line carries; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["progress", total, received, indexed] => Some(Self::Progress(Counts {
                total: total.parse().ok()?,
                received: received.parse().ok()?,
                indexed: indexed.parse().ok()?,
            })),
            ["tip", oid, kind] => Some(Self::Tip(parse_oid(oid)?, Kind::from_name(kind)?)),
            ["pack", name, objects] => Some(Self::Done(Indexed {
                name: name.to_string(),
                objects: objects.parse().ok()?,
            })),
            _ => None,
        }
    }
}

/// A full hexadecimal object id.
fn parse_oid(hex: &str) -> Option<Oid> {
    let mut oid = [0; 20];
    hex::decode_to_slice(hex, &mut oid).ok()?;
    Some(oid)
}

/// The `tip <id>` lines before the pack, up to the empty line.
fn read_tips(input: &mut impl BufRead) -> Result<Vec<Oid>, ServeError> {
    let mut tips = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        input
            .read_line(&mut line)
            .map_err(ServeError::io("reading the tips"))?;
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            return Ok(tips);
        }
        let tip = line
            .strip_prefix("tip ")
            .and_then(parse_oid)
            .filter(|_| tips.len() < MAX_TIPS)
            .ok_or_else(|| ServeError::BadTip(line.to_string()))?;
        tips.push(tip);
    }
}

/// Indexes the pack on standard input into `objects_dir/pack`.
fn serve(args: Args) -> Result<(), ServeError> {
    let Args {
        objects_dir,
        max_object_bytes,
        limits,
    } = args;
    limit_self(limits)?;
    let pack_dir = objects_dir.join("pack");
    std::fs::create_dir_all(&pack_dir).map_err(ServeError::io("creating the pack directory"))?;
    let bases = RepositoryObjects::new(&objects_dir, max_object_bytes);
    let stdout = io::stdout();
    // A parent that stopped listening ends the child through its input, so a
    // report that cannot be written is no reason to stop.
    let report = |report: Report| {
        let _ = writeln!(stdout.lock(), "{report}");
    };
    let mut input = io::stdin().lock();
    let tips = read_tips(&mut input)?;
    let options = Options {
        self_contained: super::connectivity::holds_no_objects(&objects_dir),
        ..Options::new(max_object_bytes)
    };
    let staged = stage(
        input,
        &pack_dir,
        Some(&bases as &dyn Bases),
        &tips,
        &options,
        &|counts| report(Report::Progress(counts)),
    )?;
    let landed = publish(staged, &objects_dir, options.self_contained)?;
    for (oid, kind) in landed.tips {
        report(Report::Tip(oid, kind));
    }
    report(Report::Done(landed.pack));
    Ok(())
}

/// Puts the pack in place, keeping the repository's record of LFS pointers
/// true ([`no_lfs_pointers`]); `first`: the repository held no object.
fn publish(staged: Staged, objects_dir: &Path, first: bool) -> Result<Landed, ServeError> {
    let repo = objects_dir.parent().unwrap_or(objects_dir);
    let candidates = staged.landed.lfs_candidates;
    let _lock =
        no_lfs_pointers::lock(repo).map_err(ServeError::io("locking the pack directory"))?;
    no_lfs_pointers::before_publish(repo, candidates)
        .map_err(ServeError::io("removing the record of no LFS pointers"))?;
    let landed = staged.publish()?;
    no_lfs_pointers::after_publish(repo, &landed.pack.name, first, candidates)
        .map_err(ServeError::io("writing the record of no LFS pointers"))?;
    Ok(landed)
}

/// Puts this process under `limits` before it reads anything: its address
/// space (an allocation past it fails, and the process aborts) and its
/// processor time (SIGXCPU, then SIGKILL).
#[allow(unsafe_code)]
fn limit_self(limits: ChildLimits) -> Result<(), ServeError> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the struct it is handed and nothing else.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 {
            Ok(())
        } else {
            Err(ServeError::io("setting the indexer's limits")(
                io::Error::last_os_error(),
            ))
        }
    };
    set(libc::RLIMIT_AS, limits.memory_bytes)?;
    set(libc::RLIMIT_CPU, limits.cpu_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        Args {
            objects_dir: "/srv/mirrorhost/repos/a/b.git/objects".into(),
            max_object_bytes: 1 << 30,
            limits: ChildLimits {
                memory_bytes: 4 << 30,
                cpu_seconds: 3600,
            },
        }
    }

    fn words(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn arguments_read_back_as_written() {
        assert_eq!(Args::parse(args().to_args()).unwrap(), args());
        let reordered = words(
            "--max-cpu-seconds 3600 --objects-dir /srv/mirrorhost/repos/a/b.git/objects \
             --max-memory-bytes 4294967296 --protocol 1 --max-object-bytes 1073741824",
        );
        assert_eq!(Args::parse(reordered).unwrap(), args());
    }

    #[test]
    fn a_child_of_another_protocol_refuses_to_start() {
        let mut other = args().to_args();
        other[1] = "2".into();
        let error = Args::parse(other).unwrap_err().to_string();
        assert!(
            error.contains("speaks protocol 1, the service 2"),
            "{error}"
        );
        assert!(error.contains("restart the service"), "{error}");
    }

    #[test]
    fn arguments_the_service_never_writes_are_refused_by_name() {
        let full = args().to_args();
        for (cut, expected) in [
            (vec![], "no --protocol"),
            (
                full[..full.len() - 1].to_vec(),
                "--max-cpu-seconds without a value",
            ),
            (full[..full.len() - 2].to_vec(), "no --max-cpu-seconds"),
            (
                [full.clone(), words("--objects-dir /tmp")].concat(),
                "--objects-dir twice",
            ),
            (
                [full.clone(), words("--verbose yes")].concat(),
                "an unknown flag --verbose",
            ),
            (
                [full[..4].to_vec(), words("--max-object-bytes 1G")].concat(),
                "--max-object-bytes \"1G\", not a number",
            ),
        ] {
            let error = Args::parse(cut).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}, not {expected}");
        }
    }

    #[test]
    fn reports_read_back_as_written() {
        let reports = [
            Report::Progress(Counts {
                total: 100_000,
                received: 2048,
                indexed: 1024,
            }),
            Report::Tip([0xab; 20], Kind::Tag),
            Report::Done(Indexed {
                name: "8a80eaa7fa4a70694eed37b8ccf1e72c8ad24a66".into(),
                objects: 80,
            }),
        ];
        for report in reports {
            assert_eq!(Report::parse(&report.to_string()), Some(report));
        }
        for line in [
            "",
            "progress 1 2",
            "progress 1 2 x",
            "tip abab tag",
            "tip 0000000000000000000000000000000000000000 ghost",
            "pack a",
            "pack a b c",
        ] {
            assert_eq!(Report::parse(line), None, "{line:?}");
        }
    }
}
