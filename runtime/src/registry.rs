//! The registry of entry points, and the identity of this build.
//!
//! `#[process]` registers every worker with [`inventory`] under a stable name, `module::path::ident`
//! (or the `name = "..."` given to the attribute). A child process looks its entry point up **by
//! that name only**: no code address ever crosses a process boundary, so a forged message can at
//! worst name a registered worker, never jump to arbitrary code.
//!
//! [`BuildId`] fingerprints the registry (every name with its argument and result types) and the
//! executable file; parent and child compare them in the bootstrap handshake, so a child binary
//! that is not the parent's build is a clear error in both processes.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::carrier::{self, Carrier};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;

/// A worker function: what `#[process]` makes of a free function.
///
/// The annotated function becomes a zero-sized value of a type that implements `Target`, and that
/// still derefs to the plain function, so `square(3)` keeps working. `Args` is the argument when
/// the function takes one, the tuple of them when it takes several, `()` when it takes none.
///
/// Implement it only through `#[multiproc::process]`: the attribute also registers the entry
/// point the child process looks up.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a multiproc worker",
    label = "not annotated with `#[multiproc::process]`",
    note = "annotate the function with `#[multiproc::process]`: a child process finds its entry point by registered name, so plain functions and closures cannot be sent"
)]
pub trait Target: Copy + Send + Sync + 'static {
    /// The argument, or the tuple of arguments.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The return type.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// How `Args` are encoded: `#[process]` chooses it from the argument types as written.
    /// Not public API.
    #[doc(hidden)]
    type ArgsCarrier: Carrier<Self::Args>;
    /// How `Output` is encoded. Not public API.
    #[doc(hidden)]
    type OutputCarrier: Carrier<Self::Output>;
    /// The registered name.
    const NAME: &'static str;
    /// Runs the function body.
    fn call(args: Self::Args) -> Self::Output;
}

/// A process type in the subclass style: what `#[process]` makes of an `impl` block with `run`.
///
/// The value itself (its fields) is sent to the child, which calls `run` on it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a multiproc process type",
    label = "no `#[multiproc::process]` impl block with a `run` method",
    note = "annotate an `impl` block of the type that has `fn run(&mut self)` with `#[multiproc::process]`"
)]
pub trait Runnable: Serialize + DeserializeOwned + Send + 'static {
    /// The registered name.
    const NAME: &'static str;
    /// The type's name, used for default process names (`MyProcess-1`).
    const TYPE_NAME: &'static str;
    /// Runs the process body.
    fn run_process(self);
}

/// One registered entry point. Not public API: built by generated code.
#[doc(hidden)]
pub struct Entry {
    name: &'static str,
    signature: fn() -> &'static str,
    run: Runner,
    chunk: Option<ChunkRunner>,
}

/// Decodes its input, runs a body, encodes the output (with the descriptors it carries).
type Runner = fn(&[u8]) -> Result<Encoded>;

/// A [`Runner`] of pool chunks, whose input and output can carry byte blocks.
type ChunkRunner = fn(&[u8], Vec<Vec<u8>>) -> Result<Encoded>;

inventory::collect!(Entry);

impl Entry {
    /// The entry of a `#[process]` function.
    pub const fn target<T: Target>() -> Entry {
        Entry {
            name: T::NAME,
            // The carriers are part of the wire format.
            signature: std::any::type_name::<(
                fn(T::Args) -> T::Output,
                T::ArgsCarrier,
                T::OutputCarrier,
            )>,
            run: run_target::<T>,
            chunk: Some(run_chunk::<T>),
        }
    }

    /// The entry of a `#[process]` impl block.
    pub const fn runnable<R: Runnable>() -> Entry {
        Entry {
            name: R::NAME,
            signature: std::any::type_name::<R>,
            run: run_runnable::<R>,
            chunk: None,
        }
    }

    /// The registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Decodes the arguments, runs the body, encodes the result.
    ///
    /// A panic in the body unwinds out of this call: the caller decides how to report it.
    pub(crate) fn invoke(&self, payload: &[u8]) -> Result<Encoded> {
        (self.run)(payload)
    }

    /// Runs a pool chunk: `payload` encodes a `Vec` of arguments (whose byte vectors may be
    /// `blocks`), the result a `Vec` of outputs.
    pub(crate) fn invoke_chunk(&self, payload: &[u8], blocks: Vec<Vec<u8>>) -> Result<Encoded> {
        match self.chunk {
            Some(chunk) => chunk(payload, blocks),
            None => Err(Error::new(
                ErrorKind::UnknownEntry,
                format!(
                    "`{}` is a process type, not a function: it cannot run as a pool task",
                    self.name
                ),
            )),
        }
    }
}

/// Pool tasks: decodes a chunk (a sequence of arguments), calls the function on each, encodes
/// the sequence of results.
fn run_chunk<T: Target>(payload: &[u8], blocks: Vec<Vec<u8>>) -> Result<Encoded> {
    let args = T::ArgsCarrier::decode(payload, blocks)?;
    let results: Vec<T::Output> = args.into_iter().map(T::call).collect();
    carrier::encode_chunk::<T::Output, T::OutputCarrier>(results)
}

fn run_target<T: Target>(payload: &[u8]) -> Result<Encoded> {
    let args = carrier::decode_one::<T::Args, T::ArgsCarrier>(payload)?;
    carrier::encode_one::<T::Output, T::OutputCarrier>(T::call(args))
}

fn run_runnable<R: Runnable>(payload: &[u8]) -> Result<Encoded> {
    let value: R = codec::decode(payload)?;
    value.run_process();
    Ok(Encoded::default())
}

struct Registry {
    by_name: HashMap<&'static str, &'static Entry>,
    duplicates: Vec<&'static str>,
    fingerprint: u64,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut by_name = HashMap::new();
        let mut duplicates = Vec::new();
        let mut signed: Vec<(&str, &str)> = Vec::new();
        for entry in inventory::iter::<Entry> {
            if by_name.insert(entry.name, entry).is_some() {
                duplicates.push(entry.name);
            }
            signed.push((entry.name, (entry.signature)()));
        }
        signed.sort_unstable();
        let mut hash = Fnv::new();
        hash.write(env!("CARGO_PKG_VERSION").as_bytes());
        for (name, signature) in signed {
            hash.write(name.as_bytes());
            hash.write(&[0]);
            hash.write(signature.as_bytes());
            hash.write(&[0]);
        }
        Registry {
            by_name,
            duplicates,
            fingerprint: hash.finish(),
        }
    })
}

/// Finds the entry registered under `name`.
pub(crate) fn lookup(name: &str) -> Result<&'static Entry> {
    let registry = registry();
    if registry.duplicates.contains(&name) {
        return Err(Error::new(
            ErrorKind::UnknownEntry,
            format!("entry point `{name}` is registered twice; give one of them `#[process(name = \"...\")]`"),
        ));
    }
    registry.by_name.get(name).copied().ok_or_else(|| {
        Error::new(
            ErrorKind::UnknownEntry,
            format!(
                "no entry point named `{name}` is registered in this binary (pid {})",
                std::process::id()
            ),
        )
    })
}

/// The identity of this build: the registry's fingerprint and the executable file it runs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildId {
    registry: u64,
    executable: u64,
}

impl BuildId {
    /// The identity of the running process.
    pub fn current() -> BuildId {
        static ID: OnceLock<BuildId> = OnceLock::new();
        *ID.get_or_init(|| BuildId {
            registry: registry().fingerprint,
            executable: executable_identity("/proc/self/exe"),
        })
    }

    /// The identity a binary at `path` has when it runs this build's registry.
    pub(crate) fn with_executable(path: &str) -> BuildId {
        BuildId {
            registry: registry().fingerprint,
            executable: executable_identity(path),
        }
    }
}

/// The first bootstrap frame: a build identity is a few words (16 bytes today), so 4 KiB is
/// a corrupt stream, refused before anything is allocated.
impl crate::wire::Frame for BuildId {
    const MAX_LEN: u64 = 4 << 10;
}

impl std::fmt::Display for BuildId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{:016x}", self.registry, self.executable)
    }
}

/// Device, inode, size and modification time of the file: `/proc/self/exe` names the running
/// binary even after the file on disk was replaced or deleted.
fn executable_identity(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut hash = Fnv::new();
    if let Ok(meta) = std::fs::metadata(path) {
        for part in [
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
        ] {
            hash.write(&part.to_le_bytes());
        }
    }
    hash.finish()
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::{Plain, Raw};

    #[derive(Clone, Copy)]
    struct AsRaw;
    #[derive(Clone, Copy)]
    struct AsPlain;

    impl Target for AsRaw {
        type Args = u64;
        type Output = u64;
        type ArgsCarrier = Raw;
        type OutputCarrier = Raw;
        const NAME: &'static str = "registry::tests::same";
        fn call(n: u64) -> u64 {
            n
        }
    }

    impl Target for AsPlain {
        type Args = u64;
        type Output = u64;
        type ArgsCarrier = Plain;
        type OutputCarrier = Raw;
        const NAME: &'static str = "registry::tests::same";
        fn call(n: u64) -> u64 {
            n
        }
    }

    #[test]
    fn the_carriers_are_part_of_the_signature() {
        // Same name, same types: only the carrier of the arguments differs, and with it the
        // wire format, so the build fingerprint must differ too.
        let raw = (Entry::target::<AsRaw>().signature)();
        let plain = (Entry::target::<AsPlain>().signature)();
        assert_ne!(raw, plain);
        assert!(
            raw.contains("Raw") && plain.contains("Plain"),
            "{raw} / {plain}"
        );
    }
}
