//! Minimal atomic transactions from one ruleset to another.
//!
//! Order inside the transaction (nft applies it all or nothing):
//! 1. add the table if missing, declare new chains (so elements and jumps can refer to them);
//! 2. flush changed and removed chains;
//! 3. delete removed/changed elements of sets that stay;
//! 4. delete removed or redeclared sets, then removed or redefined chains (nothing refers to
//!    them any more);
//! 5. add redefined chains, new/redeclared sets with their elements, new elements;
//! 6. add the rules of new and changed chains.
//!
//! The table is never flushed, unchanged chains are not touched, and elements of dynamic sets
//! (filled by the datapath, e.g. session affinity) are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::expr::Rule;
use crate::kernel::KernelTable;
use crate::model::{Chain, Element, Family, Key, Set, Table};
use crate::render;
use crate::text::ident;

/// Elements per `add element` / `delete element` command.
const ELEMENTS_PER_COMMAND: usize = 1000;

/// One atomic nft transaction: commands to pipe to `nft -f -` as one script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The commands, one per line, in order.
    pub commands: Vec<String>,
    /// Chains whose rules this transaction writes (new, changed or redefined).
    pub chains_written: BTreeSet<String>,
    /// Chains this transaction deletes.
    pub chains_deleted: BTreeSet<String>,
    /// Sets and maps declared (new or redeclared).
    pub sets_written: BTreeSet<String>,
    /// Sets and maps deleted.
    pub sets_deleted: BTreeSet<String>,
    /// Elements added, per set or map.
    pub elements_added: BTreeMap<String, usize>,
    /// Elements deleted, per set or map.
    pub elements_deleted: BTreeMap<String, usize>,
    /// The same commands as typed operations, for backends that speak netlink; `None` for
    /// large transactions (over [`MAX_TYPED_CHAINS`] chains written), which go through `nft`.
    pub ops: Option<Vec<Op>>,
}

impl Default for Transaction {
    fn default() -> Self {
        Transaction {
            commands: Vec::new(),
            chains_written: BTreeSet::new(),
            chains_deleted: BTreeSet::new(),
            sets_written: BTreeSet::new(),
            sets_deleted: BTreeSet::new(),
            elements_added: BTreeMap::new(),
            elements_deleted: BTreeMap::new(),
            ops: Some(Vec::new()),
        }
    }
}

/// Transactions writing more chains than this carry no typed operations (memory: the ops
/// hold a copy of every rule written). High enough for a whole 100k-Service table, whose
/// first program then goes over netlink too (seconds instead of tens of seconds in `nft`).
pub const MAX_TYPED_CHAINS: usize = 1_000_000;

/// One typed operation of a transaction (table and family are the transaction's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddTable,
    /// Deletes the whole table with everything in it.
    DeleteTable,
    AddChain(Chain),
    FlushChain(String),
    DeleteChain(String),
    /// Declares a set or map (without elements: they follow as `AddElements`).
    AddSet(Box<Set>),
    DeleteSet(String),
    /// Adds elements; `interval` when the set has the `interval` flag (elements are then
    /// ranges: a start and an end marker each in the kernel).
    AddElements {
        set: String,
        interval: bool,
        elements: Vec<(Key, Element)>,
    },
    DeleteElements {
        set: String,
        interval: bool,
        keys: Vec<Key>,
    },
    /// Appends rules to a chain, with their comments as stored: the last one's carries the
    /// chain's content hash. (One op per chain: a 100k-Service table has 700k rules.)
    AddRules {
        chain: String,
        rules: Vec<Rule>,
    },
}

impl Transaction {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Deletes table `family name` with everything in it (it must exist).
    pub fn delete_table(family: Family, name: &str) -> Transaction {
        Transaction {
            commands: vec![format!("delete table {} {}", family.as_str(), ident(name))],
            ops: Some(vec![Op::DeleteTable]),
            ..Transaction::default()
        }
    }

    /// Appends a later transaction (computed against the state `self` leaves) so both run as
    /// one atomic script.
    pub fn append(&mut self, other: Transaction) {
        self.commands.extend(other.commands);
        self.chains_written.extend(other.chains_written);
        self.chains_deleted.extend(other.chains_deleted);
        self.sets_written.extend(other.sets_written);
        self.sets_deleted.extend(other.sets_deleted);
        for (k, v) in other.elements_added {
            *self.elements_added.entry(k).or_default() += v;
        }
        for (k, v) in other.elements_deleted {
            *self.elements_deleted.entry(k).or_default() += v;
        }
        self.ops = match (self.ops.take(), other.ops) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
    }

    /// The script for `nft -f -`.
    pub fn script(&self) -> String {
        let mut s = String::with_capacity(self.commands.iter().map(|c| c.len() + 1).sum());
        for c in &self.commands {
            s.push_str(c);
            s.push('\n');
        }
        s
    }
}

/// How a chain of the new ruleset compares to the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainCmp {
    Absent,
    Same,
    /// Same definition, other rules: flush and refill.
    Changed,
    /// Base-chain definition differs: delete and re-add.
    Redefined,
}

/// What the diff needs to know about the old side.
pub(crate) trait Old {
    fn exists(&self) -> bool;
    fn chain_names(&self) -> Vec<&str>;
    fn compare_chain(&self, new: &Chain) -> ChainCmp;
    fn set_names(&self) -> Vec<&str>;
    /// `None` when absent, `Some(same declaration?)` otherwise.
    fn compare_set(&self, new: &Set) -> Option<bool>;
    fn elements(&self, set: &str) -> Option<&BTreeMap<Key, Element>>;
}

impl Old for Table {
    fn exists(&self) -> bool {
        true
    }
    fn chain_names(&self) -> Vec<&str> {
        self.chains.keys().map(String::as_str).collect()
    }
    fn compare_chain(&self, new: &Chain) -> ChainCmp {
        match self.chains.get(&new.name) {
            None => ChainCmp::Absent,
            Some(old) if old.base != new.base => ChainCmp::Redefined,
            Some(old) if old.rules == new.rules => ChainCmp::Same,
            Some(_) => ChainCmp::Changed,
        }
    }
    fn set_names(&self) -> Vec<&str> {
        self.sets.keys().map(String::as_str).collect()
    }
    fn compare_set(&self, new: &Set) -> Option<bool> {
        self.sets.get(&new.name).map(|s| s.same_declaration(new))
    }
    fn elements(&self, set: &str) -> Option<&BTreeMap<Key, Element>> {
        self.sets.get(set).map(|s| &s.elements)
    }
}

/// The transaction that turns `old` into `new` (both models of the same table).
pub fn diff(old: &Table, new: &Table) -> Transaction {
    diff_with(old, new)
}

/// The transaction that turns what the kernel holds into `new`. Pass `None` when the kernel has
/// no such table.
pub fn diff_kernel(old: Option<&KernelTable>, new: &Table) -> Transaction {
    match old {
        Some(k) => diff_with(k, new),
        None => diff_with(&Absent, new),
    }
}

struct Absent;

impl Old for Absent {
    fn exists(&self) -> bool {
        false
    }
    fn chain_names(&self) -> Vec<&str> {
        Vec::new()
    }
    fn compare_chain(&self, _: &Chain) -> ChainCmp {
        ChainCmp::Absent
    }
    fn set_names(&self) -> Vec<&str> {
        Vec::new()
    }
    fn compare_set(&self, _: &Set) -> Option<bool> {
        None
    }
    fn elements(&self, _: &str) -> Option<&BTreeMap<Key, Element>> {
        None
    }
}

fn diff_with(old: &dyn Old, new: &Table) -> Transaction {
    let fam = new.family.as_str();
    let tbl = &*crate::text::ident(&new.name);
    let mut tx = Transaction::default();
    let cmds = &mut tx.commands;
    let mut ops: Vec<Op> = Vec::new();

    // Classify chains and sets.
    let mut added_chains = Vec::new();
    let mut changed_chains = BTreeSet::new();
    let mut redefined_chains = Vec::new();
    for chain in new.chains.values() {
        match old.compare_chain(chain) {
            ChainCmp::Absent => added_chains.push(chain),
            ChainCmp::Same => {}
            ChainCmp::Changed => {
                changed_chains.insert(chain.name.as_str());
            }
            ChainCmp::Redefined => redefined_chains.push(chain),
        }
    }
    let removed_chains: Vec<&str> = old
        .chain_names()
        .into_iter()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    let mut added_sets = Vec::new();
    let mut redeclared_sets = Vec::new();
    let mut kept_sets = Vec::new();
    for set in new.sets.values() {
        match old.compare_set(set) {
            None => added_sets.push(set),
            Some(false) => redeclared_sets.push(set),
            Some(true) => kept_sets.push(set),
        }
    }
    let removed_sets: Vec<&str> = old
        .set_names()
        .into_iter()
        .filter(|n| !new.sets.contains_key(*n))
        .collect();
    // Chains that refer to a redeclared set must let go of it while it is re-made.
    if !redeclared_sets.is_empty() {
        let names: BTreeSet<&str> = redeclared_sets.iter().map(|s| s.name.as_str()).collect();
        for chain in new.chains.values() {
            if old.compare_chain(chain) != ChainCmp::Same {
                continue;
            }
            let mut hit = false;
            for r in &chain.rules {
                r.visit_refs(&mut |x| {
                    if let crate::expr::Ref::Set(s) = x {
                        hit |= names.contains(s);
                    }
                });
            }
            if hit {
                changed_chains.insert(chain.name.as_str());
            }
        }
    }

    // 1. table and new chains.
    let typed =
        added_chains.len() + redefined_chains.len() + changed_chains.len() <= MAX_TYPED_CHAINS;
    if !old.exists() {
        cmds.push(format!("add table {fam} {tbl}"));
        ops.push(Op::AddTable);
    }
    for chain in &added_chains {
        cmds.push(add_chain(fam, tbl, chain));
        if typed {
            ops.push(Op::AddChain(empty_chain(chain)));
        }
    }
    // 2. flush.
    for name in changed_chains
        .iter()
        .copied()
        .chain(removed_chains.iter().copied())
    {
        cmds.push(format!("flush chain {fam} {tbl} {}", ident(name)));
        ops.push(Op::FlushChain(name.to_string()));
    }
    for chain in &redefined_chains {
        cmds.push(format!("flush chain {fam} {tbl} {}", ident(&chain.name)));
        ops.push(Op::FlushChain(chain.name.clone()));
    }
    // 3. element deletions in kept sets; collect additions for later.
    let mut element_adds: Vec<(&Set, Vec<(&Key, &Element)>)> = Vec::new();
    let empty = BTreeMap::new();
    for set in &kept_sets {
        if !set.elements_managed() {
            continue;
        }
        let old_elems = old.elements(&set.name).unwrap_or(&empty);
        let (dels, adds) = element_diff(old_elems, &set.elements);
        if !dels.is_empty() {
            tx.elements_deleted.insert(set.name.clone(), dels.len());
            for chunk in dels.chunks(ELEMENTS_PER_COMMAND) {
                let mut c = format!("delete element {fam} {tbl} {} {{ ", ident(&set.name));
                for (i, k) in chunk.iter().enumerate() {
                    if i > 0 {
                        c.push_str(", ");
                    }
                    render::key(&mut c, k);
                }
                c.push_str(" }");
                cmds.push(c);
            }
            if typed {
                ops.push(Op::DeleteElements {
                    set: set.name.clone(),
                    interval: set.flags.interval,
                    keys: dels.iter().map(|k| (*k).clone()).collect(),
                });
            }
        }
        if !adds.is_empty() {
            element_adds.push((set, adds));
        }
    }
    // 4. deletions of sets and chains.
    for name in removed_sets
        .iter()
        .copied()
        .chain(redeclared_sets.iter().map(|s| s.name.as_str()))
    {
        // `delete set` removes maps too.
        cmds.push(format!("delete set {fam} {tbl} {}", ident(name)));
        ops.push(Op::DeleteSet(name.to_string()));
        tx.sets_deleted.insert(name.to_string());
    }
    for name in removed_chains
        .iter()
        .copied()
        .chain(redefined_chains.iter().map(|c| c.name.as_str()))
    {
        cmds.push(format!("delete chain {fam} {tbl} {}", ident(name)));
        ops.push(Op::DeleteChain(name.to_string()));
        tx.chains_deleted.insert(name.to_string());
    }
    // 5. re-made chains, sets, elements.
    for chain in &redefined_chains {
        cmds.push(add_chain(fam, tbl, chain));
        ops.push(Op::AddChain(empty_chain(chain)));
    }
    for set in added_sets.iter().chain(redeclared_sets.iter()) {
        let (decl, _) = render::set_decl(set);
        cmds.push(format!(
            "add {} {fam} {tbl} {} {{ {}; }}",
            render::set_keyword(set),
            ident(&set.name),
            decl.join("; ")
        ));
        tx.sets_written.insert(set.name.clone());
        if typed {
            ops.push(Op::AddSet(Box::new(Set {
                name: set.name.clone(),
                key: set.key.clone(),
                map: set.map.clone(),
                flags: set.flags,
                timeout: set.timeout,
                comment: set.comment.clone(),
                elements: BTreeMap::new(),
            })));
        }
        if set.elements_managed() && !set.elements.is_empty() {
            let elems: Vec<(&Key, &Element)> = set.elements.iter().collect();
            element_adds.push((set, elems));
        }
    }
    for (set, adds) in element_adds {
        *tx.elements_added.entry(set.name.clone()).or_default() += adds.len();
        for chunk in adds.chunks(ELEMENTS_PER_COMMAND) {
            let mut c = format!("add element {fam} {tbl} {} {{ ", ident(&set.name));
            for (i, (k, e)) in chunk.iter().enumerate() {
                if i > 0 {
                    c.push_str(", ");
                }
                render::element(&mut c, k, e);
            }
            c.push_str(" }");
            cmds.push(c);
        }
        if typed {
            ops.push(Op::AddElements {
                set: set.name.clone(),
                interval: set.flags.interval,
                elements: adds
                    .iter()
                    .map(|(k, e)| ((*k).clone(), (*e).clone()))
                    .collect(),
            });
        }
    }
    // 6. rules.
    let rule_chains = added_chains
        .iter()
        .copied()
        .chain(redefined_chains.iter().copied())
        .chain(changed_chains.iter().filter_map(|n| new.chains.get(*n)));
    for chain in rule_chains {
        tx.chains_written.insert(chain.name.clone());
        let (lines, hash) = render::chain_rules(chain);
        for line in lines {
            let mut c = String::with_capacity(line.len() + 40);
            let _ = write!(c, "add rule {fam} {tbl} {} {line}", ident(&chain.name));
            cmds.push(c);
        }
        if typed && !chain.rules.is_empty() {
            let mut rules = chain.rules.clone();
            if let Some(last) = rules.last_mut() {
                last.comment = Some(render::final_comment(last.comment.as_deref(), hash));
            }
            ops.push(Op::AddRules {
                chain: chain.name.clone(),
                rules,
            });
        }
    }
    tx.ops = typed.then_some(ops);
    tx
}

fn empty_chain(c: &Chain) -> Chain {
    Chain {
        name: c.name.clone(),
        base: c.base.clone(),
        rules: Vec::new(),
    }
}

fn add_chain(fam: &str, tbl: &str, chain: &Chain) -> String {
    match render::base_line(chain) {
        Some(b) => format!("add chain {fam} {tbl} {} {{ {b} }}", ident(&chain.name)),
        None => format!("add chain {fam} {tbl} {}", ident(&chain.name)),
    }
}

/// Keys to delete (gone or changed value) and elements to add (new or changed value).
fn element_diff<'o, 'n>(
    old: &'o BTreeMap<Key, Element>,
    new: &'n BTreeMap<Key, Element>,
) -> (Vec<&'o Key>, Vec<(&'n Key, &'n Element)>) {
    let mut dels = Vec::new();
    let mut adds = Vec::new();
    let mut o = old.iter().peekable();
    let mut n = new.iter().peekable();
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some((ok, _)), None) => {
                dels.push(*ok);
                o.next();
            }
            (None, Some(ne)) => {
                adds.push(*ne);
                n.next();
            }
            (Some((ok, oe)), Some((nk, ne))) => match ok.cmp(nk) {
                std::cmp::Ordering::Less => {
                    dels.push(*ok);
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    adds.push((*nk, *ne));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    // The kernel holds the comment as rendered (sanitized).
                    fn comment(c: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
                        c.as_deref()
                            .map(|c| crate::text::sanitize(c, crate::text::MAX_COMMENT))
                    }
                    if oe.value != ne.value || comment(&oe.comment) != comment(&ne.comment) {
                        dels.push(*ok);
                        adds.push((*nk, *ne));
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
    (dels, adds)
}
