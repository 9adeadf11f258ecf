//! The field table of fields.txt, parsed once: message name -> fields by number.

use std::collections::HashMap;
use std::sync::OnceLock;

/// How a field repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// A plain Go field: a zero scalar is Go's unset value, which JSON omits.
    Optional,
    /// A Go pointer: present means set, even to zero (`replicas: 0`).
    Pointer,
    Repeated,
    /// `map<string, T>`: repeated entries with key 1 and value 2.
    Map,
    /// An inlined Go struct: its fields are written at the parent's level in JSON.
    Inline,
}

#[derive(Debug)]
pub struct Field {
    pub name: String,
    pub label: Label,
    /// A scalar (`string`, `int64`, ...) or a fully qualified message name.
    pub ty: String,
}

#[derive(Debug, Default)]
pub struct Schema {
    messages: HashMap<String, HashMap<u32, Field>>,
}

static TABLE: &str = include_str!("fields.txt");

impl Schema {
    pub fn get() -> &'static Schema {
        static S: OnceLock<Schema> = OnceLock::new();
        S.get_or_init(|| Schema::parse(TABLE))
    }

    fn parse(text: &str) -> Schema {
        let mut s = Schema::default();
        let mut current: Option<String> = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["M", name] => {
                    s.messages.insert(name.to_string(), HashMap::new());
                    current = Some(name.to_string());
                }
                [num, name, label, ty, rest @ ..] => {
                    let (Some(msg), Ok(num)) = (current.as_ref(), num.parse::<u32>()) else {
                        continue;
                    };
                    let label = match *label {
                        "r" => Label::Repeated,
                        "m" => Label::Map,
                        "i" => Label::Inline,
                        "p" => Label::Pointer,
                        _ => Label::Optional,
                    };
                    let ty = if label == Label::Map {
                        rest.first().copied().unwrap_or(ty)
                    } else {
                        ty
                    };
                    if let Some(fields) = s.messages.get_mut(msg) {
                        fields.insert(
                            num,
                            Field {
                                name: name.to_string(),
                                label,
                                ty: ty.to_string(),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        s
    }

    pub fn message(&self, name: &str) -> Option<&HashMap<u32, Field>> {
        self.messages.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_knows_the_served_kinds_and_their_fields() {
        let s = Schema::get();
        let meta = s
            .message("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .expect("ObjectMeta");
        assert_eq!(meta[&1].name, "name");
        assert_eq!(meta[&11].label, Label::Map);
        assert_eq!(meta[&11].ty, "string");
        let probe = s.message("k8s.io.api.core.v1.Probe").expect("Probe");
        assert_eq!(probe[&1].label, Label::Inline);
        let dspec = s
            .message("k8s.io.api.apps.v1.DeploymentSpec")
            .expect("spec");
        assert_eq!(dspec[&1].label, Label::Pointer);
        assert_eq!(dspec[&5].label, Label::Optional);
        for m in [
            "k8s.io.api.core.v1.Namespace",
            "k8s.io.api.core.v1.Pod",
            "k8s.io.api.core.v1.Service",
            "k8s.io.api.apps.v1.Deployment",
            "k8s.io.api.discovery.v1.EndpointSlice",
            "k8s.io.api.networking.v1.NetworkPolicy",
        ] {
            assert!(s.message(m).is_some(), "{m} missing");
        }
    }
}
