//! The allow/deny matrix between the pods of some namespaces (rows from, columns to), and its
//! text form: `.` allowed, `X` denied, the upstream e2e "truth table" layout.

use std::fmt::Write;

use crate::eval::{allowed, Endpoint, Verdict};
use crate::state::PolicyState;
use crate::PolicyError;
use crate::{PodKey, Protocol};

/// Verdicts between every pair of pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// Row and column order.
    pub pods: Vec<PodKey>,
    /// `cells[from][to]`.
    pub cells: Vec<Vec<Verdict>>,
}

impl Matrix {
    /// The allow bits only: `allowed()[from][to]`.
    pub fn allowed(&self) -> Vec<Vec<bool>> {
        self.cells
            .iter()
            .map(|r| r.iter().map(|v| v.allowed).collect())
            .collect()
    }

    /// The cell `from` → `to`, if both are in the matrix.
    pub fn get(&self, from: &PodKey, to: &PodKey) -> Option<&Verdict> {
        let i = self.pods.iter().position(|p| p == from)?;
        let j = self.pods.iter().position(|p| p == to)?;
        Some(&self.cells[i][j])
    }

    /// The text form (tab-separated; header row of destinations).
    pub fn render(&self) -> String {
        render_bits(&self.pods, &self.allowed(), None)
    }
}

/// Renders a matrix of allow bits; with `other`, cells that differ from it are marked `!`
/// after the symbol of `bits` (used to compare computed and measured matrices).
pub fn render_bits(pods: &[PodKey], bits: &[Vec<bool>], other: Option<&[Vec<bool>]>) -> String {
    let mut out = String::from("-");
    for p in pods {
        let _ = write!(out, "\t{p}");
    }
    out.push('\n');
    for (i, from) in pods.iter().enumerate() {
        let _ = write!(out, "{from}");
        for j in 0..pods.len() {
            let b = bits.get(i).and_then(|r| r.get(j)).copied().unwrap_or(false);
            out.push('\t');
            out.push(if b { '.' } else { 'X' });
            let differs = other
                .and_then(|o| o.get(i).and_then(|r| r.get(j)))
                .is_some_and(|o| *o != b);
            if differs {
                out.push('!');
            }
        }
        out.push('\n');
    }
    out
}

/// The matrix between all pods of `namespaces` (in that order, pods by name) for
/// `protocol`/`port`.
pub fn matrix(
    state: &PolicyState,
    namespaces: &[&str],
    port: u16,
    protocol: Protocol,
) -> Result<Matrix, PolicyError> {
    let pods: Vec<PodKey> = namespaces
        .iter()
        .flat_map(|ns| state.pods_in(ns).map(|p| p.key()))
        .collect();
    let mut cells = Vec::with_capacity(pods.len());
    for from in &pods {
        let src = Endpoint::Pod(from.clone());
        let row = pods
            .iter()
            .map(|to| allowed(state, &src, &Endpoint::Pod(to.clone()), protocol, port))
            .collect::<Result<Vec<_>, _>>()?;
        cells.push(row);
    }
    Ok(Matrix { pods, cells })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rows_from_columns_to() {
        let pods = vec![PodKey::new("x", "a"), PodKey::new("x", "b")];
        let bits = vec![vec![true, false], vec![true, true]];
        assert_eq!(
            render_bits(&pods, &bits, None),
            "-\tx/a\tx/b\nx/a\t.\tX\nx/b\t.\t.\n"
        );
        let measured = vec![vec![true, true], vec![true, true]];
        assert_eq!(
            render_bits(&pods, &bits, Some(&measured)),
            "-\tx/a\tx/b\nx/a\t.\tX!\nx/b\t.\t.\n"
        );
    }
}
