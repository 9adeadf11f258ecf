//! Just enough HTTP/1.1 for the server's replies and the probe's GET: bounded line reads,
//! request-line detection, Content-Length and chunked bodies.

use std::io::{self, BufRead, Read};

/// Longest request/status/header line accepted.
pub(crate) const MAX_LINE: usize = 8 * 1024;
const MAX_HEADERS: usize = 100;
/// Largest body read (request bodies are discarded, response bodies kept).
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// Reads one line (with its `\n`) of at most [`MAX_LINE`] bytes; `None` at end of stream.
pub(crate) fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") && n == MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// An HTTP request line: `METHOD SP target SP HTTP/1.x`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestLine {
    pub method: String,
    pub path: String,
    pub version: String,
}

pub(crate) fn parse_request_line(line: &str) -> Option<RequestLine> {
    let mut parts = line.trim_end().split(' ');
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    let is_token = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    (parts.next().is_none() && is_token && version.starts_with("HTTP/1.")).then(|| RequestLine {
        method: method.to_string(),
        path: path.to_string(),
        version: version.to_string(),
    })
}

/// Header lines up to the blank line, names lower-cased.
pub(crate) fn read_headers(reader: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "headers cut short"))?;
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many headers",
            ));
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn content_length(headers: &[(String, String)]) -> io::Result<Option<usize>> {
    header(headers, "content-length")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))
        })
        .transpose()
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// Reads a message body framed by the headers. `until_eof` allows a response body that ends
/// with the connection (requests without a length have no body).
pub(crate) fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    until_eof: bool,
) -> io::Result<Vec<u8>> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidData, "body too large");
    if is_chunked(headers) {
        let mut body = Vec::new();
        loop {
            let size_line = read_line(reader)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "chunk cut short"))?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                read_headers(reader)?; // trailers
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(too_big());
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?; // CRLF after the chunk
        }
    }
    match content_length(headers)? {
        Some(n) if n > MAX_BODY => Err(too_big()),
        Some(n) => {
            let mut body = vec![0; n];
            reader.read_exact(&mut body)?;
            Ok(body)
        }
        None if until_eof => {
            let mut body = Vec::new();
            reader.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
            if body.len() > MAX_BODY {
                return Err(too_big());
            }
            Ok(body)
        }
        None => Ok(Vec::new()),
    }
}

/// A complete response with a Content-Length.
pub(crate) fn response(
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
    close: bool,
) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Parses `HTTP/1.1 200 OK` into the status code.
pub(crate) fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn recognises_request_lines() {
        let r = parse_request_line("GET /hostname HTTP/1.1\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/hostname"));
        assert!(parse_request_line("hello\n").is_none());
        assert!(parse_request_line("get / HTTP/1.1\n").is_none());
        assert!(parse_request_line("GET / SMTP\n").is_none());
    }

    #[test]
    fn reads_chunked_and_sized_bodies() {
        let raw = b"4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n";
        let headers = vec![("transfer-encoding".to_string(), "chunked".to_string())];
        let body = read_body(&mut BufReader::new(&raw[..]), &headers, true).unwrap();
        assert_eq!(body, b"abcdef");
        let headers = vec![("content-length".to_string(), "3".to_string())];
        let body = read_body(&mut BufReader::new(&b"xyzrest"[..]), &headers, true).unwrap();
        assert_eq!(body, b"xyz");
    }

    #[test]
    fn long_lines_are_rejected() {
        let raw = vec![b'a'; MAX_LINE + 10];
        let err = read_line(&mut BufReader::new(&raw[..])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn status_line() {
        assert_eq!(parse_status_line("HTTP/1.1 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_status_line("SSH-2.0"), None);
    }
}
