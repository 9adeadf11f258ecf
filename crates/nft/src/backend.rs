//! Running transactions: the `nft` tool, or a recorder for tests.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::diff::{diff_kernel, Transaction};
use crate::kernel::KernelTable;
use crate::model::{Family, Table};
use crate::NftError;

/// Applies transactions and reads tables back.
pub trait Backend {
    /// Applies `tx` atomically (all or nothing). An empty transaction is a no-op.
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError>;

    /// Reads one table back; `Ok(None)` when the kernel has no such table.
    fn list_table(&mut self, family: Family, name: &str) -> Result<Option<KernelTable>, NftError>;

    /// Makes the kernel hold `desired`: reads the table, diffs, applies the difference.
    /// Returns what was applied. Use it at start; afterwards diff models with [`crate::diff`].
    fn reconcile(&mut self, desired: &Table) -> Result<Transaction, NftError> {
        let current = self.list_table(desired.family, &desired.name)?;
        let tx = diff_kernel(current.as_ref(), desired);
        self.apply(&tx)?;
        Ok(tx)
    }
}

/// The `nft` command-line tool, in the current network namespace or (via `nsenter`) in another.
#[derive(Debug, Clone, Default)]
pub struct NftCli {
    netns: Option<PathBuf>,
}

impl NftCli {
    /// `nft` in the caller's network namespace.
    pub fn new() -> Self {
        NftCli { netns: None }
    }

    /// `nft` run through `nsenter --net=<path>` (e.g. `/run/netns/NAME`).
    pub fn in_netns(path: impl Into<PathBuf>) -> Self {
        NftCli {
            netns: Some(path.into()),
        }
    }

    fn command(&self) -> Command {
        match &self.netns {
            None => Command::new("nft"),
            Some(p) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", p.display())).arg("nft");
                c
            }
        }
    }

    fn describe(&self) -> String {
        match &self.netns {
            None => "nft".to_string(),
            Some(p) => format!("nsenter --net={} nft", p.display()),
        }
    }

    /// Runs `nft -f -` with `script` on stdin.
    pub fn run_script(&self, script: &str) -> Result<(), NftError> {
        let spawn_err = |source| NftError::Spawn {
            cmd: format!("{} -f -", self.describe()),
            source,
        };
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let mut stdin = child.stdin.take();
        // Feed stdin from another thread so a chatty nft cannot deadlock us.
        let out = std::thread::scope(|s| {
            let writer = s.spawn(move || match stdin.as_mut() {
                Some(w) => w.write_all(script.as_bytes()),
                None => Ok(()),
            });
            let out = child.wait_with_output();
            let written = writer.join().unwrap_or(Ok(()));
            (out, written)
        });
        let output = out.0.map_err(spawn_err)?;
        if !output.status.success() {
            return Err(NftError::Nft {
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        out.1.map_err(spawn_err)
    }
}

impl Backend for NftCli {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        self.run_script(&tx.script())
    }

    fn list_table(&mut self, family: Family, name: &str) -> Result<Option<KernelTable>, NftError> {
        let output = self
            .command()
            .args(["-j", "list", "table", family.as_str(), name])
            .output()
            .map_err(|source| NftError::Spawn {
                cmd: format!("{} -j list table", self.describe()),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NftError::Nft {
                status: output.status.to_string(),
                stderr: stderr.trim().to_string(),
            });
        }
        let json = String::from_utf8_lossy(&output.stdout);
        KernelTable::parse(&json, family, name).map(Some)
    }
}

/// Records transactions instead of applying them; `list_table` returns `kernel`.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Scripts of the applied (non-empty) transactions, in order.
    pub scripts: Vec<String>,
    /// What `list_table` returns.
    pub kernel: Option<KernelTable>,
}

impl Backend for Recording {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        if !tx.is_empty() {
            self.scripts.push(tx.script());
        }
        Ok(())
    }

    fn list_table(&mut self, family: Family, name: &str) -> Result<Option<KernelTable>, NftError> {
        Ok(self
            .kernel
            .clone()
            .filter(|k| k.family == family && k.name == name))
    }
}
