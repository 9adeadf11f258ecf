//! The wire decoder: a `k8s\0`-prefixed runtime.Unknown envelope around one message, read
//! field by field against the table into JSON with Kubernetes' JSON names and forms.

use serde_json::{json, Map, Value};

use super::schema::{Field, Label, Schema};
use super::{message_of, ProtoError};

const MAGIC: &[u8] = b"k8s\0";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";

/// Decodes a Kubernetes protobuf body into the JSON object it encodes (with `apiVersion` and
/// `kind` from the envelope).
pub fn decode_object(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::Magic)?;
    let envelope = decode_message(rest, UNKNOWN, "")?;
    let api_version = envelope["apiVersion"].as_str().unwrap_or("").to_string();
    let kind = envelope["kind"].as_str().unwrap_or("").to_string();
    let msg = message_of(&api_version, &kind)
        .ok_or_else(|| ProtoError::UnknownKind(format!("{api_version}, Kind={kind}")))?;
    let raw = raw_field(rest)?;
    let mut obj = decode_message(&raw, &msg, "")?;
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

/// The bytes of field 2 (`raw`) of the envelope.
fn raw_field(buf: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while !r.done() {
        let (num, wire) = r.key()?;
        match (num, wire) {
            (2, 2) => out = r.bytes()?.to_vec(),
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(ProtoError::Malformed(self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed(self.pos))
    }
    fn key(&mut self) -> Result<(u32, u8), ProtoError> {
        let k = self.varint()?;
        Ok(((k >> 3) as u32, (k & 7) as u8))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(ProtoError::Malformed(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.varint()? as usize;
        self.take(n)
    }
    fn skip(&mut self, wire: u8) -> Result<(), ProtoError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            _ => Err(ProtoError::Malformed(self.pos)),
        }
    }
}

fn field_err(path: &str, name: &str, reason: impl Into<String>) -> ProtoError {
    ProtoError::Field {
        field: join(path, name),
        reason: reason.into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Decodes one message into a JSON object (or, for the special messages, its JSON form).
fn decode_message(buf: &[u8], msg: &str, path: &str) -> Result<Value, ProtoError> {
    if let Some(v) = special(buf, msg, path)? {
        return Ok(v);
    }
    let fields = Schema::get()
        .message(msg)
        .ok_or_else(|| ProtoError::UnknownKind(msg.to_string()))?;
    let mut out = Map::new();
    let mut r = Reader { buf, pos: 0 };
    while !r.done() {
        let (num, wire) = r.key()?;
        let Some(f) = fields.get(&num) else {
            r.skip(wire)?;
            continue;
        };
        match f.label {
            Label::Optional | Label::Pointer => {
                let v = value(&mut r, wire, &f.ty, &join(path, &f.name))?;
                // Go writes its unset (zero) plain scalars; its JSON omits them.
                let zero = match &v {
                    Value::String(s) => s.is_empty(),
                    Value::Bool(b) => !b,
                    Value::Number(n) => n.as_f64() == Some(0.0),
                    _ => false,
                };
                let unset = f.label == Label::Optional && !f.ty.contains('.') && zero;
                if unset {
                    out.remove(&f.name);
                } else {
                    out.insert(f.name.clone(), v);
                }
            }
            Label::Inline => {
                let inner = decode_message(r.bytes()?, &f.ty, path)?;
                if let Value::Object(m) = inner {
                    out.extend(m);
                }
            }
            Label::Repeated => {
                let p = join(path, &f.name);
                let list = out
                    .entry(f.name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let items = repeated(&mut r, wire, f, &p)?;
                if let Value::Array(a) = list {
                    a.extend(items);
                }
            }
            Label::Map => {
                let entry = r.bytes()?;
                let (k, v) = map_entry(entry, f, &join(path, &f.name))?;
                let m = out
                    .entry(f.name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = m {
                    m.insert(k, v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

fn repeated(r: &mut Reader, wire: u8, f: &Field, path: &str) -> Result<Vec<Value>, ProtoError> {
    let packable = !matches!(f.ty.as_str(), "string" | "bytes") && !f.ty.contains('.');
    if wire == 2 && packable {
        // A packed run of scalars.
        let mut inner = Reader {
            buf: r.bytes()?,
            pos: 0,
        };
        let elem_wire = match f.ty.as_str() {
            "double" | "fixed64" => 1,
            "float" | "fixed32" => 5,
            _ => 0,
        };
        let mut out = Vec::new();
        while !inner.done() {
            out.push(value(&mut inner, elem_wire, &f.ty, path)?);
        }
        return Ok(out);
    }
    Ok(vec![value(r, wire, &f.ty, path)?])
}

fn map_entry(buf: &[u8], f: &Field, path: &str) -> Result<(String, Value), ProtoError> {
    let mut r = Reader { buf, pos: 0 };
    let mut key = String::new();
    let mut val = match f.ty.as_str() {
        "string" | "bytes" => json!(""),
        _ => Value::Null,
    };
    while !r.done() {
        let (num, wire) = r.key()?;
        match num {
            1 => {
                key = String::from_utf8(r.bytes()?.to_vec())
                    .map_err(|_| field_err(path, "key", "not UTF-8"))?
            }
            2 => val = value(&mut r, wire, &f.ty, &format!("{path}[{key}]"))?,
            _ => r.skip(wire)?,
        }
    }
    Ok((key, val))
}

/// One value of type `ty` at the reader.
fn value(r: &mut Reader, wire: u8, ty: &str, path: &str) -> Result<Value, ProtoError> {
    let want = match ty {
        "string" | "bytes" => 2,
        "double" | "fixed64" => 1,
        "float" | "fixed32" => 5,
        t if t.contains('.') => 2,
        _ => 0,
    };
    if wire != want {
        return Err(field_err(path, "", format!("wire type {wire} for a {ty}")));
    }
    Ok(match ty {
        "string" => {
            let b = r.bytes()?;
            json!(std::str::from_utf8(b).map_err(|_| field_err(path, "", "not UTF-8"))?)
        }
        "bytes" => serde_json::to_value(k8s_openapi::ByteString(r.bytes()?.to_vec()))
            .unwrap_or(Value::Null),
        "bool" => json!(r.varint()? != 0),
        "int32" => json!(r.varint()? as i32),
        "int64" => json!(r.varint()? as i64),
        "uint32" => json!(r.varint()? as u32),
        "uint64" => json!(r.varint()?),
        "sint32" | "sint64" => {
            let v = r.varint()?;
            json!(((v >> 1) as i64) ^ -((v & 1) as i64))
        }
        "double" | "fixed64" => {
            let b: [u8; 8] = r.take(8)?.try_into().unwrap_or([0; 8]);
            if ty == "double" {
                json!(f64::from_le_bytes(b))
            } else {
                json!(u64::from_le_bytes(b))
            }
        }
        "float" | "fixed32" => {
            let b: [u8; 4] = r.take(4)?.try_into().unwrap_or([0; 4]);
            if ty == "float" {
                json!(f32::from_le_bytes(b))
            } else {
                json!(u32::from_le_bytes(b))
            }
        }
        msg => decode_message(r.bytes()?, msg, path)?,
    })
}

/// The raw fields of a small message: (number, varint value, length-delimited bytes).
type RawFields<'a> = Vec<(u32, u64, &'a [u8])>;

/// Messages whose JSON form is not an object of their fields.
fn special(buf: &[u8], msg: &str, path: &str) -> Result<Option<Value>, ProtoError> {
    const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";
    let short = match msg.strip_prefix(META) {
        Some(s) => s,
        None => match msg {
            "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => "IntOrString",
            "k8s.io.apimachinery.pkg.api.resource.Quantity" => "Quantity",
            "k8s.io.apimachinery.pkg.runtime.RawExtension" => "RawExtension",
            _ => return Ok(None),
        },
    };
    let nums = || -> Result<RawFields<'_>, ProtoError> {
        let mut r = Reader { buf, pos: 0 };
        let mut out = Vec::new();
        while !r.done() {
            let (num, wire) = r.key()?;
            match wire {
                0 => out.push((num, r.varint()?, &[][..])),
                2 => out.push((num, 0, r.bytes()?)),
                w => r.skip(w)?,
            }
        }
        Ok(out)
    };
    let find_int = |f: &[(u32, u64, &[u8])], n: u32| {
        f.iter()
            .rev()
            .find(|(num, _, _)| *num == n)
            .map_or(0, |(_, v, _)| *v)
    };
    let find_bytes = |f: &[(u32, u64, &'_ [u8])], n: u32| -> Vec<u8> {
        f.iter()
            .rev()
            .find(|(num, _, _)| *num == n)
            .map(|(_, _, b)| b.to_vec())
            .unwrap_or_default()
    };
    let utf8 = |b: Vec<u8>| String::from_utf8(b).map_err(|_| field_err(path, "", "not UTF-8"));
    Ok(Some(match short {
        "Time" | "MicroTime" => {
            let f = nums()?;
            let secs = find_int(&f, 1) as i64;
            let nanos = find_int(&f, 2) as i32;
            if secs == 0 && nanos == 0 {
                Value::Null
            } else {
                let ts = k8s_openapi::jiff::Timestamp::new(secs, nanos)
                    .map_err(|e| field_err(path, "", e.to_string()))?;
                if short == "Time" {
                    json!(format!("{ts:.0}"))
                } else {
                    json!(format!("{ts:.6}"))
                }
            }
        }
        "Duration" => json!(go_duration(find_int(&nums()?, 1) as i64)),
        "FieldsV1" | "RawExtension" => {
            let raw = find_bytes(&nums()?, 1);
            if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&raw).map_err(|e| field_err(path, "", e.to_string()))?
            }
        }
        "IntOrString" => {
            let f = nums()?;
            if find_int(&f, 1) == 1 {
                json!(utf8(find_bytes(&f, 3))?)
            } else {
                json!(find_int(&f, 2) as i32)
            }
        }
        "Quantity" => json!(utf8(find_bytes(&nums()?, 1))?),
        _ => return Ok(None),
    }))
}

/// Nanoseconds as Go's `time.Duration` prints them (`1h2m3.5s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let (h, m) = (n / 3_600_000_000_000, (n / 60_000_000_000) % 60);
    let s = (n % 60_000_000_000) as f64 / 1e9;
    let mut out = sign.to_string();
    if h > 0 {
        out += &format!("{h}h");
    }
    if h > 0 || m > 0 {
        out += &format!("{m}m");
    }
    out += &format!("{s}s");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::openapi_pb::{bytes as bytes_field, varint};

    fn int_field(num: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(num) << 3, out);
        varint(v, out);
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut tm);
        bytes_field(2, kind.as_bytes(), &mut tm);
        let mut u = Vec::new();
        bytes_field(1, &tm, &mut u);
        bytes_field(2, raw, &mut u);
        bytes_field(3, b"", &mut u);
        bytes_field(4, b"", &mut u);
        let mut out = MAGIC.to_vec();
        out.extend(u);
        out
    }

    /// The bytes `kubectl create namespace demo` sends (same layout as client-go's encoder:
    /// ObjectMeta with name and an empty creationTimestamp, empty spec and status).
    #[test]
    fn a_namespace_as_kubectl_create_sends_it() {
        let mut meta = Vec::new();
        bytes_field(1, b"demo", &mut meta);
        bytes_field(8, b"", &mut meta);
        let mut ns = Vec::new();
        bytes_field(1, &meta, &mut ns);
        bytes_field(2, b"", &mut ns);
        bytes_field(3, b"", &mut ns);
        let obj = decode_object(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "demo", "creationTimestamp": null},
                   "spec": {}, "status": {}})
        );
    }

    #[test]
    fn deployment_with_labels_ports_probe_and_int_or_string() {
        let mut labels_entry = Vec::new();
        bytes_field(1, b"app", &mut labels_entry);
        bytes_field(2, b"web", &mut labels_entry);
        let mut meta = Vec::new();
        bytes_field(1, b"web", &mut meta);
        bytes_field(11, &labels_entry, &mut meta);
        // Container: name, image, ports[{containerPort: 80}], readinessProbe.httpGet.port "http"
        let mut port = Vec::new();
        int_field(3, 80, &mut port);
        let mut ios = Vec::new();
        int_field(1, 1, &mut ios);
        bytes_field(3, b"http", &mut ios);
        let mut http_get = Vec::new();
        bytes_field(1, b"/", &mut http_get);
        bytes_field(2, &ios, &mut http_get);
        let mut handler = Vec::new();
        bytes_field(2, &http_get, &mut handler);
        let mut probe = Vec::new();
        bytes_field(1, &handler, &mut probe);
        int_field(2, 3, &mut probe);
        let mut c = Vec::new();
        bytes_field(1, b"nginx", &mut c);
        bytes_field(2, b"nginx:1", &mut c);
        bytes_field(6, &port, &mut c);
        bytes_field(11, &probe, &mut c);
        let mut pod_spec = Vec::new();
        bytes_field(2, &c, &mut pod_spec);
        let mut tmpl = Vec::new();
        bytes_field(2, &pod_spec, &mut tmpl);
        let mut spec = Vec::new();
        int_field(1, 2, &mut spec);
        bytes_field(3, &tmpl, &mut spec);
        let mut d = Vec::new();
        bytes_field(1, &meta, &mut d);
        bytes_field(2, &spec, &mut d);
        let obj = decode_object(&envelope("apps/v1", "Deployment", &d)).unwrap();
        assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(obj["spec"]["replicas"], json!(2));
        let c0 = &obj["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c0["image"], json!("nginx:1"));
        assert_eq!(c0["ports"], json!([{"containerPort": 80}]));
        assert_eq!(
            c0["readinessProbe"],
            json!({"httpGet": {"path": "/", "port": "http"}, "initialDelaySeconds": 3})
        );
        // And the result is a valid typed Deployment.
        let typed: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(obj).unwrap();
        assert_eq!(typed.spec.replicas, Some(2));
    }

    #[test]
    fn times_bytes_and_durations() {
        let mut t = Vec::new();
        int_field(1, 1_700_000_000, &mut t);
        assert_eq!(
            decode_message(&t, "k8s.io.apimachinery.pkg.apis.meta.v1.Time", "").unwrap(),
            json!("2023-11-14T22:13:20Z")
        );
        let mut entry = Vec::new();
        bytes_field(1, b"k", &mut entry);
        bytes_field(2, b"hi", &mut entry);
        let mut secret = Vec::new();
        bytes_field(2, &entry, &mut secret);
        let s = decode_message(&secret, "k8s.io.api.core.v1.Secret", "").unwrap();
        assert_eq!(s["data"], json!({"k": "aGk="}));
        assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration(30_000_000_000), "30s");
    }

    #[test]
    fn delete_options_with_propagation_policy() {
        let mut opts = Vec::new();
        bytes_field(4, b"Foreground", &mut opts);
        int_field(1, 0, &mut opts);
        let obj = decode_object(&envelope("meta.k8s.io/v1", "DeleteOptions", &opts)).unwrap();
        assert_eq!(obj["propagationPolicy"], "Foreground");
        // gracePeriodSeconds is a pointer: an explicit 0 is kept.
        assert_eq!(obj["gracePeriodSeconds"], 0);
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert!(matches!(decode_object(b"{}"), Err(ProtoError::Magic)));
        let mut bad = MAGIC.to_vec();
        bad.extend([0x0a, 0x50, 0x01]);
        assert!(matches!(decode_object(&bad), Err(ProtoError::Malformed(_))));
        let body = envelope("example.com/v1", "Widget", b"");
        assert!(matches!(
            decode_object(&body),
            Err(ProtoError::UnknownKind(_))
        ));
    }
}
