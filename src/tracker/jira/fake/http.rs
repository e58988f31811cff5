//! The fake's HTTP/1.1 on a loopback socket: one request at a time per
//! connection, recorded, then answered.

use super::*;

pub(super) fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        let (latency, (status, headers, body)) = {
            let mut state = state.lock().unwrap();
            state.log.push(request.clone());
            if request.method != "GET" {
                state.generation += 1;
            }
            let reply = match state.faults.pop_front() {
                Some(fault) => fault,
                None => state.handle(&request),
            };
            state.in_flight += 1;
            state.most_in_flight = state.most_in_flight.max(state.in_flight);
            (state.latency, reply)
        };
        std::thread::sleep(latency);
        state.lock().unwrap().in_flight -= 1;
        if !write_reply(&stream, status, &headers, &body) {
            return;
        }
    }
}

/// Writes an HTTP/1.1 answer (JSON unless `headers` say otherwise); false when
/// the client has gone.
pub(crate) fn write_reply(
    stream: &TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> bool {
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: keep-alive\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k == "Content-Type") {
        head.push_str("Content-Type: application/json;charset=UTF-8\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // One write: head and body in two would wait for the client's delayed
    // acknowledgement (Nagle), some 40 ms an answer.
    let mut answer = head.into_bytes();
    answer.extend_from_slice(body);
    out.write_all(&answer).is_ok()
}

fn decode(s: &str) -> String {
    let mut bytes = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        bytes.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        bytes.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                bytes.push(b' ');
                i += 1;
            }
            c => {
                bytes.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads one HTTP/1.1 request; `None` when the client closed the connection.
pub(crate) fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Recorded> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        body.resize(len.parse().ok()?, 0);
        reader.read_exact(&mut body).ok()?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    Some(Recorded {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

/// The file name and content of the `file` part of a multipart body.
pub(super) fn multipart_file(r: &Recorded) -> Option<(String, Vec<u8>)> {
    let ct = r.headers.get("content-type")?;
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let body = &r.body;
    let head_end = body.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&body[..head_end]);
    if !head.contains("name=\"file\"") {
        return None;
    }
    let name = head
        .split("filename=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    let tail = format!("\r\n--{boundary}--");
    let end = body
        .windows(tail.len())
        .rposition(|w| w == tail.as_bytes())?;
    Some((name, body[head_end..end].to_vec()))
}
