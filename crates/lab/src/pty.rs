//! A pseudo-terminal for `kubectl exec -t`: the command gets the slave end as its stdin,
//! stdout and stderr and as its controlling terminal (a new session), as a container runtime
//! gives it; the runtime keeps the master end to read the output, write the input and set the
//! size the client reports.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

/// The master end of a terminal whose slave end a command was given.
pub struct Terminal {
    master: OwnedFd,
}

/// Opens a terminal and hands its slave end to `cmd` (stdio, new session, controlling tty).
pub fn attach(cmd: &mut tokio::process::Command) -> io::Result<Terminal> {
    let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    let slave = pty.slave;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: runs in the forked child right before exec and only makes two system calls:
    // a new session, then the terminal on fd 0 (already the slave end) as its controlling tty.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(Terminal { master: pty.master })
}

impl Terminal {
    /// The output to read (it ends with EIO once every slave end is closed), the input to
    /// write, and the function that sets the terminal's size (columns, rows).
    #[allow(clippy::type_complexity)]
    pub fn split(
        self,
    ) -> io::Result<(
        tokio::fs::File,
        tokio::fs::File,
        Box<dyn Fn(u16, u16) + Send + Sync>,
    )> {
        let reader = tokio::fs::File::from_std(std::fs::File::from(self.master.try_clone()?));
        let writer = tokio::fs::File::from_std(std::fs::File::from(self.master.try_clone()?));
        let master = self.master;
        let resize = move |cols: u16, rows: u16| {
            let size = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid for the call, on a
            // descriptor this closure owns.
            let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            if rc < 0 {
                tracing::debug!("setting the terminal size: {}", io::Error::last_os_error());
            }
        };
        Ok((reader, writer, Box::new(resize)))
    }
}
