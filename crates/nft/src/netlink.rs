//! A native nftables backend: transactions sent as one netlink batch, tables read back with
//! netlink dumps, without the `nft` tool.
//!
//! Why: `nft` re-reads the table's chains before every change, and the kernel dumps chains in
//! time quadratic in their number, so one small change took ~0.27 s at 10k Services and ~19 s
//! at 100k (2 loaded cores). A batch written directly skips that: ~0.1 s at 10k, ~0.9 s at
//! 100k, what remains being the kernel's commit-time loop check, which walks every chain
//! reachable through jumps (so coalesce changes into one transaction at scale). The whole
//! first program of a 100k-Service table (300k chains, 700k rules, 290 MB of batch) takes
//! ~12 s against ~24 s in `nft -f` (3.3 GB), most of it the kernel parsing expressions.
//! Reading a table back ([`NetlinkBackend::list_table`]) skips `nft -j` and its JSON: 0.5 s
//! and 14 MB instead of 3.5 s and ~1 GB at 10k Services, 7-10 s and 120 MB instead of
//! 150-170 s and ~10 GB at 100k (`examples/nft_bench`, 2 loaded cores).
//!
//! Scope: what the service proxy and per-object updates use: tables, chains, sets and maps
//! (plain, concatenated, interval, timeout, dynamic; verdict and data maps) with their
//! elements, rules with payload, meta, ct, fib, numgen, lookup (named and anonymous sets),
//! vmaps (named and anonymous), dynset, nat, masquerade, reject, counter, mark, log, MSS
//! clamping (rt, byteorder, exthdr), notrack and verdicts: every table sarasa programs,
//! NetworkPolicy's included. Anything else (interval sets of concatenations, interface-name
//! wildcards, attributes over 64 KiB) makes [`NetlinkBackend::apply_batch`] refuse the whole
//! batch with an error naming it: nothing runs the `nft` tool on a node (the lab hides it from
//! the agent and the plugin; the tool backend, [`crate::NftCli`], is the tests' oracle and the
//! operator's).
//!
//! This module is the I/O only: the socket, sending a batch, reading its ACK or errors and
//! naming the operation at fault. The bytes come from [`crate::wire`] (sans-IO, tested from
//! captured fixtures); refusing what it cannot encode is `crate::route`'s call.
//!
//! One batch may carry several tables ([`NetlinkBackend::apply_batch`]): one `sendmsg`, one
//! kernel commit. The socket's send buffer grows to the batch (as `nft` does), so a whole
//! 100k-Service table goes in one piece.

use std::path::PathBuf;

use crate::backend::Backend;
use crate::diff::{diff_kernel, Transaction};
use crate::kernel::KernelTable;
use crate::list;
use crate::model::{Family, Table};
use crate::nl::{Msgs, NlSocket, NLMSG_ERROR};
use crate::route::route;
use crate::wire::batch::{locate, Batch};
use crate::wire::WireCapture;
use crate::NftError;

const ENOBUFS: i32 = 105;

/// nftables over netlink only: batches and listings.
pub struct NetlinkBackend {
    sock: NlSocket,
    seq: u32,
    /// Batches sent (applied or rejected by the kernel; for tests).
    pub native_count: usize,
    /// Listings that dumped every chain of the family (what
    /// [`NetlinkBackend::list_table_like`] avoids for big tables).
    pub chain_dumps: usize,
}

impl std::fmt::Debug for NetlinkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkBackend")
            .field("seq", &self.seq)
            .field("native_count", &self.native_count)
            .finish()
    }
}

impl NetlinkBackend {
    /// A backend in the caller's network namespace.
    pub fn new() -> Result<Self, NftError> {
        Ok(NetlinkBackend {
            sock: NlSocket::open(None)?,
            seq: 1,
            native_count: 0,
            chain_dumps: 0,
        })
    }

    /// A backend whose socket lives in the namespace at `path` (e.g. `/run/netns/NAME`); the
    /// socket is opened from a short-lived thread, the caller does not move.
    pub fn in_netns(path: impl Into<PathBuf>) -> Result<Self, NftError> {
        let path = path.into();
        Ok(NetlinkBackend {
            sock: NlSocket::open(Some(&path))?,
            seq: 1,
            native_count: 0,
            chain_dumps: 0,
        })
    }

    /// Reads table `family name` back with netlink dumps: the same value as
    /// [`KernelTable::parse`] of `nft -j list table`. `Ok(None)` when there is no such table.
    /// What the model cannot represent (ranges, catch-all elements, other datatypes, object
    /// maps) is an error, as in the JSON parser.
    pub fn list_table(
        &mut self,
        family: Family,
        name: &str,
    ) -> Result<Option<KernelTable>, NftError> {
        list::list_table(
            &mut self.sock,
            &mut self.seq,
            family,
            name,
            None,
            &mut self.chain_dumps,
        )
    }

    /// The names of every table of `family` in the namespace (e.g. to find a sharded
    /// ruleset's tables, or everything a product owns by prefix).
    pub fn table_names(&mut self, family: Family) -> Result<Vec<String>, NftError> {
        list::table_names(&mut self.sock, &mut self.seq, family)
    }

    /// [`NetlinkBackend::list_table`] of `desired.family desired.name`, the same value, found
    /// faster for big tables: chains are looked up by the names `desired` has (and those the
    /// kernel's map elements and rules jump to) instead of dumping every chain of the family,
    /// which costs seconds at 300k chains and again for each table of a sharded ruleset. When
    /// the table holds more chains than found that way, they are all dumped after all.
    pub fn list_table_like(&mut self, desired: &Table) -> Result<Option<KernelTable>, NftError> {
        list::list_table(
            &mut self.sock,
            &mut self.seq,
            desired.family,
            &desired.name,
            Some(desired),
            &mut self.chain_dumps,
        )
    }

    /// Keeps a copy of every netlink datagram this backend sends and receives from now on;
    /// [`NetlinkBackend::take_capture`] hands them over. For fixtures of the wire format
    /// (`tests/wire_capture.rs`) and for debugging.
    pub fn capture(&mut self) {
        self.sock.capture = Some(WireCapture::default());
    }

    /// What was captured since [`NetlinkBackend::capture`] (empty when not capturing); capturing
    /// stops.
    pub fn take_capture(&mut self) -> WireCapture {
        self.sock.capture.take().unwrap_or_default()
    }

    /// Applies several tables' transactions, in order, as ONE netlink batch (one kernel
    /// commit: all or nothing). When any part cannot be encoded, nothing is sent and the
    /// error names the construct ([`NftError::Unencodable`]).
    pub fn apply_batch(&mut self, parts: &[(Family, &str, &Transaction)]) -> Result<(), NftError> {
        let Some(batch) = route(parts, self.seq)? else {
            return Ok(());
        };
        self.seq = batch.seq.wrapping_add(1);
        self.native_count += 1;
        // Errors are located among the parts the batch was built from.
        let sent: Vec<(Family, &str, &Transaction)> = parts
            .iter()
            .copied()
            .filter(|(_, _, tx)| !tx.is_empty())
            .collect();
        self.send_batch(&batch, &sent)
    }

    /// Applies `tx` for table `family table`: [`NetlinkBackend::apply_batch`] of one part.
    pub fn apply_to(
        &mut self,
        family: Family,
        table: &str,
        tx: &Transaction,
    ) -> Result<(), NftError> {
        self.apply_batch(&[(family, table, tx)])
    }

    /// Sends a batch and waits for the ACK of its last message or the first error. The kernel
    /// handles the batch inside `sendmsg`, so all answers are queued once it returns.
    fn send_batch(
        &mut self,
        b: &Batch,
        parts: &[(Family, &str, &Transaction)],
    ) -> Result<(), NftError> {
        self.sock.send(&b.buf)?;
        let ours = |seq: u32| seq.wrapping_sub(b.first) <= b.last.wrapping_sub(b.first);
        let mut failure: Option<(u32, i32)> = None;
        let mut overflowed = false;
        // After an error (or lost answers), read what is queued without waiting.
        let mut draining = false;
        loop {
            let data = match self.sock.recv(draining) {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    overflowed = true;
                    draining = true;
                    continue;
                }
                Err(e) if draining && e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(source) => {
                    self.sock.reopen()?;
                    return Err(NftError::Netlink {
                        what: "netlink receive (batch result)".into(),
                        source,
                    });
                }
            };
            let mut acked = false;
            for m in Msgs(data) {
                let m = m?;
                if m.ty != NLMSG_ERROR || !ours(m.seq) {
                    continue;
                }
                match m.errno()? {
                    0 if m.seq == b.last => acked = true,
                    0 => {}
                    errno => {
                        failure.get_or_insert((m.seq, errno));
                    }
                }
            }
            match (acked, failure) {
                (true, None) if !overflowed => return Ok(()),
                (_, Some(_)) => draining = true,
                _ => {}
            }
        }
        let (seq, errno) = failure.unwrap_or((b.first, ENOBUFS));
        let at = locate(b, parts, seq);
        let lost = if overflowed {
            " (more errors were lost: the socket buffer overflowed)"
        } else {
            ""
        };
        Err(NftError::Netlink {
            what: format!(
                "nftables batch of {} messages rejected, nothing applied; first error at {at}{lost}",
                b.last.wrapping_sub(b.first)
            ),
            source: std::io::Error::from_raw_os_error(errno),
        })
    }
}

/// A [`NetlinkBackend`] bound to one table, as a [`Backend`] (transactions do not name their
/// table).
#[derive(Debug)]
pub struct NetlinkTableBackend {
    pub inner: NetlinkBackend,
    pub family: Family,
    pub table: String,
}

impl Backend for NetlinkTableBackend {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        let table = self.table.clone();
        self.inner.apply_to(self.family, &table, tx)
    }

    fn list_table(&mut self, family: Family, name: &str) -> Result<Option<KernelTable>, NftError> {
        self.inner.list_table(family, name)
    }

    fn reconcile(&mut self, desired: &Table) -> Result<Transaction, NftError> {
        let current = self.inner.list_table_like(desired)?;
        let tx = diff_kernel(current.as_ref(), desired);
        self.apply(&tx)?;
        Ok(tx)
    }
}
