//! Just enough HTTP/1.1 for Kubernetes clients over plain TCP: keep-alive,
//! `Content-Length` (or chunked) request bodies, fixed-length responses, and
//! chunked responses for watch streams.
//!
//! Both clients the server must satisfy (Go's net/http in kubectl, hyper in kube)
//! speak HTTP/1.1 to an `http://` server; neither needs HTTP/2, `Expect`, or
//! compression (Go only asks for gzip, which the server may decline).

use std::io::{self, BufRead, BufReader, Read, Write};

/// The API server's request size limit (3 MiB in kube-apiserver); larger bodies get 413.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent ("/api/v1/nodes?watch=1"), for the request log.
    pub target: String,
    /// The percent-decoded path.
    pub path: String,
    pub query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The last value of a query parameter (Go's `url.Values.Get` takes the first;
    /// clients never repeat these).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (or reset) the connection between requests.
    Closed,
    /// Not HTTP we understand; answer 400 and close.
    Malformed(String),
    TooLarge,
    /// The connection failed (or was shut down by [`super::ApiServer::stop`]).
    Io,
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

fn read_line<R: BufRead>(r: &mut R, budget: &mut usize) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let n = r.take(*budget as u64 + 1).read_until(b'\n', &mut line)?;
    if n > *budget {
        return Err(ReadError::Malformed("request head too large".into()));
    }
    *budget -= n;
    if !line.ends_with(b"\n") {
        return Err(if line.is_empty() { ReadError::Closed } else { ReadError::Malformed("truncated line".into()) });
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| ReadError::Malformed("non-UTF-8 request head".into()))
}

/// Reads one request; `Err(Closed)` when the connection ended cleanly before it.
pub fn read_request<R: Read>(r: &mut BufReader<R>) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD;
    let mut first = read_line(r, &mut budget)?;
    // RFC 9112 §2.2: ignore empty lines before a request line.
    while first.is_empty() {
        first = read_line(r, &mut budget)?;
    }
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ReadError::Malformed(format!("bad request line {first:?}")));
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') || method.is_empty() {
        return Err(ReadError::Malformed(format!("bad request line {first:?}")));
    }
    let mut headers = Vec::new();
    loop {
        let line = match read_line(r, &mut budget) {
            Err(ReadError::Closed) => {
                return Err(ReadError::Malformed("connection closed in headers".into()));
            }
            other => other?,
        };
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(ReadError::Malformed(format!("bad header line {line:?}")));
        };
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(raw_path, false).ok_or_else(|| ReadError::Malformed("bad escape in path".into()))?;
    let query = parse_query(raw_query).ok_or_else(|| ReadError::Malformed("bad escape in query".into()))?;
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        path,
        query,
        headers,
        body: Vec::new(),
        keep_alive: true,
    };
    let connection = req.header("connection").map(str::to_ascii_lowercase).unwrap_or_default();
    req.keep_alive = if version == "HTTP/1.0" { connection.contains("keep-alive") } else { !connection.contains("close") };
    if req.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        req.body = read_chunked(r)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| ReadError::Malformed(format!("bad Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(ReadError::TooLarge);
        }
        req.body = vec![0; len];
        r.read_exact(&mut req.body)?;
    }
    Ok(req)
}

fn read_chunked<R: Read>(r: &mut BufReader<R>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let line = read_line(r, &mut budget)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| ReadError::Malformed(format!("bad chunk size {size:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            let mut budget = MAX_HEAD;
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ReadError::Malformed("chunk not followed by CRLF".into()));
        }
    }
}

/// Decodes `%XX` escapes (and `+` as a space in query strings, as Go's `url.ParseQuery` does).
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A complete (non-streaming) response.
#[derive(Debug)]
pub struct Response {
    pub code: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// RFC 7234 `Warning` values, as the API server sends for dropped unknown fields.
    pub warnings: Vec<String>,
}

impl Response {
    pub fn json(code: u16, body: &serde_json::Value) -> Response {
        Response::with_type(code, "application/json", body)
    }

    pub fn with_type(code: u16, content_type: &str, body: &serde_json::Value) -> Response {
        let mut bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        bytes.push(b'\n');
        Response { code, content_type: content_type.into(), body: bytes, warnings: Vec::new() }
    }

    pub fn text(code: u16, body: &str) -> Response {
        Response { code, content_type: "text/plain; charset=utf-8".into(), body: body.into(), warnings: Vec::new() }
    }
}

fn head(code: u16, content_type: &str, warnings: &[String], keep_alive: bool) -> String {
    let mut h = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nCache-Control: no-cache, private\r\n",
        reason_phrase(code)
    );
    for w in warnings {
        h.push_str(&format!("Warning: 299 - {}\r\n", serde_json::Value::String(w.clone())));
    }
    if !keep_alive {
        h.push_str("Connection: close\r\n");
    }
    h
}

pub fn write_response<W: Write>(w: &mut W, resp: &Response, keep_alive: bool) -> io::Result<()> {
    let mut out = head(resp.code, &resp.content_type, &resp.warnings, keep_alive).into_bytes();
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", resp.body.len()).as_bytes());
    out.extend_from_slice(&resp.body);
    w.write_all(&out)?;
    w.flush()
}

/// A chunked 200 response: one chunk per watch event, flushed at once so clients see
/// each event as it happens.
pub struct Chunked<'a, W: Write> {
    w: &'a mut W,
}

impl<'a, W: Write> Chunked<'a, W> {
    pub fn start(w: &'a mut W, content_type: &str) -> io::Result<Self> {
        let mut h = head(200, content_type, &[], true);
        h.push_str("Transfer-Encoding: chunked\r\n\r\n");
        w.write_all(h.as_bytes())?;
        w.flush()?;
        Ok(Chunked { w })
    }

    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.w.write_all(&out)?;
        self.w.flush()
    }

    /// Ends the stream cleanly; the connection stays usable.
    pub fn finish(self) -> io::Result<()> {
        self.w.write_all(b"0\r\n\r\n")?;
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, ReadError> {
        read_request(&mut BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn request_with_query_and_body() {
        let r = parse("PATCH /api/v1/nodes/a%2Db?fieldManager=kubectl+x&dryRun=All HTTP/1.1\r\nContent-Length: 2\r\nContent-Type: x\r\n\r\n{}")
            .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("PATCH", "/api/v1/nodes/a-b"));
        assert_eq!(r.param("fieldManager"), Some("kubectl x"));
        assert_eq!(r.header("content-type"), Some("x"));
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive);
    }

    #[test]
    fn chunked_body_and_connection_close() {
        let r =
            parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(r.body, b"abcd");
        assert!(!r.keep_alive);
    }

    #[test]
    fn garbage_is_malformed_and_eof_is_closed() {
        assert!(matches!(parse("hello\r\n\r\n"), Err(ReadError::Malformed(_))));
        assert!(matches!(parse("GET /%zz HTTP/1.1\r\n\r\n"), Err(ReadError::Malformed(_))));
        assert!(matches!(parse(""), Err(ReadError::Closed)));
        assert!(matches!(parse("GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"), Err(ReadError::TooLarge)));
    }
}
