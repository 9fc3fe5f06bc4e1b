//! One page of a collection's records, as read from a server's `…/get` and
//! written to a server's `…/add` or to a snapshot file (one JSON line per
//! record).
//!
//! Embeddings are kept as `f32`, the type Chroma stores: a value read as
//! Chroma prints it and written back is the same `f32`. Documents, metadatas
//! and uris are kept as the JSON the server sent.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Records of one collection, column by column (all columns as long as
/// `ids`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordPage {
    /// Record ids.
    pub ids: Vec<String>,
    /// Embeddings (`None`: the server returned none for the record).
    pub embeddings: Vec<Option<Vec<f32>>>,
    /// Documents (`null` when none).
    pub documents: Vec<Value>,
    /// Metadatas (`null` or `{}` when none, as the server returned it).
    pub metadatas: Vec<Value>,
    /// Uris (`null` when none).
    pub uris: Vec<Value>,
    /// Bytes this page took on the wire or on disk.
    pub bytes: usize,
    /// The embeddings column as the server sent it (a JSON array), when the
    /// page was read for a server-to-server copy: written on as it came,
    /// without decoding a float. `embeddings` is then all `None`.
    pub raw_embeddings: Option<bytes::Bytes>,
}

/// One record as a line of a snapshot file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordLine {
    /// Record id.
    pub id: String,
    /// Its embedding.
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
    /// Its document.
    #[serde(default)]
    pub document: Value,
    /// Its metadata.
    #[serde(default)]
    pub metadata: Value,
    /// Its uri.
    #[serde(default)]
    pub uri: Value,
}

/// A record as written to a snapshot line (see [`RecordLine`]).
#[derive(Serialize)]
struct LineRef<'a> {
    id: &'a str,
    embedding: &'a Option<Vec<f32>>,
    document: &'a Value,
    metadata: &'a Value,
    uri: &'a Value,
}

#[derive(Deserialize)]
struct GetAnswer {
    ids: Vec<String>,
    #[serde(default)]
    embeddings: Option<Vec<Option<Vec<f32>>>>,
    #[serde(default)]
    documents: Option<Vec<Value>>,
    #[serde(default)]
    metadatas: Option<Vec<Value>>,
    #[serde(default)]
    uris: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct GetAnswerSkippingEmbeddings {
    ids: Vec<String>,
    #[serde(default)]
    documents: Option<Vec<Value>>,
    #[serde(default)]
    metadatas: Option<Vec<Value>>,
    #[serde(default)]
    uris: Option<Vec<Value>>,
}

fn column<T: Clone>(col: Option<Vec<T>>, n: usize, fill: T, name: &str) -> Result<Vec<T>, String> {
    match col {
        None => Ok(vec![fill; n]),
        Some(c) if c.len() == n => Ok(c),
        Some(c) => Err(format!("'{name}' has {} entries for {n} ids", c.len())),
    }
}

impl RecordPage {
    /// Decodes a `…/get` answer for a server-to-server copy: the
    /// embeddings column is kept as raw JSON (checked to be an array as
    /// long as `ids`), the other columns decoded.
    pub fn from_get_answer_raw(body: bytes::Bytes) -> Result<RecordPage, String> {
        use crate::chroma::json_scan;
        let answer: GetAnswerSkippingEmbeddings =
            serde_json::from_slice(&body).map_err(|e| format!("invalid get answer: {e}"))?;
        let n = answer.ids.len();
        let root = json_scan::root(&body).ok_or("invalid get answer")?;
        let members =
            json_scan::object_members(&body, &root).ok_or("the get answer is not an object")?;
        let raw = match members.into_iter().find(|(k, _)| k == "embeddings") {
            Some((_, span)) => {
                let count = json_scan::array_elements(&body, &span)
                    .ok_or("'embeddings' is not an array")?
                    .len();
                if count != n {
                    return Err(format!("'embeddings' has {count} entries for {n} ids"));
                }
                body.slice(span)
            }
            None => return Err("the get answer has no embeddings".into()),
        };
        Ok(RecordPage {
            embeddings: vec![None; n],
            documents: column(answer.documents, n, Value::Null, "documents")?,
            metadatas: column(answer.metadatas, n, Value::Null, "metadatas")?,
            uris: column(answer.uris, n, Value::Null, "uris")?,
            ids: answer.ids,
            bytes: body.len(),
            raw_embeddings: Some(raw),
        })
    }

    /// The body of an `…/add` request that adds these records, as JSON
    /// text (raw embeddings spliced in as they came).
    pub fn add_body(&self) -> Result<String, String> {
        let mut value = self.add_payload();
        let Some(raw) = &self.raw_embeddings else {
            return Ok(value.to_string());
        };
        if let Some(map) = value.as_object_mut() {
            map.remove("embeddings");
        }
        let mut text = value.to_string();
        let raw = std::str::from_utf8(raw).map_err(|e| format!("embeddings are not UTF-8: {e}"))?;
        // `text` is an object with at least "ids": append one member.
        text.pop();
        text.push_str(",\"embeddings\":");
        text.push_str(raw);
        text.push('}');
        Ok(text)
    }

    /// Decodes a `…/get` answer; an error says what is wrong with it.
    pub fn from_get_answer(body: &[u8]) -> Result<RecordPage, String> {
        let answer: GetAnswer =
            serde_json::from_slice(body).map_err(|e| format!("invalid get answer: {e}"))?;
        let n = answer.ids.len();
        Ok(RecordPage {
            embeddings: column(answer.embeddings, n, None, "embeddings")?,
            documents: column(answer.documents, n, Value::Null, "documents")?,
            metadatas: column(answer.metadatas, n, Value::Null, "metadatas")?,
            uris: column(answer.uris, n, Value::Null, "uris")?,
            ids: answer.ids,
            bytes: body.len(),
            raw_embeddings: None,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds one record (from a snapshot line) of `bytes` bytes.
    pub fn push(&mut self, line: RecordLine, bytes: usize) {
        self.ids.push(line.id);
        self.embeddings.push(line.embedding);
        self.documents.push(line.document);
        self.metadatas.push(line.metadata);
        self.uris.push(line.uri);
        self.bytes += bytes;
    }

    /// The body of an `…/add` request that adds these records. Columns
    /// that are null for every record are left out (Chroma then stores
    /// none); an all-empty metadata column is left out the same way.
    pub fn add_payload(&self) -> Value {
        let mut body = serde_json::Map::new();
        body.insert("ids".into(), serde_json::json!(self.ids));
        body.insert("embeddings".into(), serde_json::json!(self.embeddings));
        let columns = [
            ("documents", &self.documents),
            ("metadatas", &self.metadatas),
            ("uris", &self.uris),
        ];
        for (name, column) in columns {
            let empty = column
                .iter()
                .all(|v| v.is_null() || v.as_object().is_some_and(|o| o.is_empty()));
            if !empty {
                body.insert(name.into(), Value::Array(column.clone()));
            }
        }
        Value::Object(body)
    }

    /// The page as snapshot lines: one JSON object and a newline per
    /// record, appended to `out`.
    pub fn write_lines(&self, out: &mut Vec<u8>) -> Result<(), String> {
        for k in 0..self.ids.len() {
            // Borrowed and typed, so that embeddings are written as f32
            // (the shortest text that reads back as the same f32).
            let line = LineRef {
                id: &self.ids[k],
                embedding: &self.embeddings[k],
                document: &self.documents[k],
                metadata: &self.metadatas[k],
                uri: &self.uris[k],
            };
            serde_json::to_writer(&mut *out, &line)
                .map_err(|e| format!("encoding record {:?}: {e}", self.ids[k]))?;
            out.push(b'\n');
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_get_answer_round_trips_through_snapshot_lines_and_keeps_f32_values() {
        let body = br#"{"ids":["r1","r2"],"embeddings":[[0.099999994,0.19999999],[0.3,0.4]],
            "documents":["d",null],"uris":[null,"u2"],"metadatas":[{"k":1.5},{}],"include":[]}"#;
        let page = RecordPage::from_get_answer(body).unwrap();
        assert_eq!(page.len(), 2);
        let mut out = Vec::new();
        page.write_lines(&mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("[0.099999994,0.19999999]"), "{text}");
        let mut back = RecordPage::default();
        for line in text.lines() {
            back.push(serde_json::from_str(line).unwrap(), line.len() + 1);
        }
        assert_eq!(back.ids, page.ids);
        assert_eq!(back.embeddings, page.embeddings);
        assert_eq!(back.documents, page.documents);
        assert_eq!(back.metadatas, page.metadatas);
        assert_eq!(back.uris, page.uris);
        assert_eq!(back.bytes, out.len());
        let add = page.add_payload();
        assert_eq!(add["documents"], json!(["d", null]));
        assert_eq!(add["uris"], json!([null, "u2"]));
    }

    #[test]
    fn a_raw_page_keeps_the_embeddings_text_and_adds_the_same_records() {
        let body = bytes::Bytes::from_static(
            br#"{"ids":["r1","r2"],"embeddings":[[0.099999994,0.19999999],[0.3,0.4]],"documents":["d",null],"uris":null,"metadatas":[{"k":1.5},{}]}"#,
        );
        let page = RecordPage::from_get_answer_raw(body).unwrap();
        let add: Value = serde_json::from_str(&page.add_body().unwrap()).unwrap();
        assert_eq!(add["ids"], json!(["r1", "r2"]));
        assert_eq!(add["documents"], json!(["d", null]));
        assert!(add.get("uris").is_none());
        assert!(page
            .add_body()
            .unwrap()
            .contains("[[0.099999994,0.19999999],[0.3,0.4]]"));
        let short = bytes::Bytes::from_static(br#"{"ids":["a","b"],"embeddings":[[1.0]]}"#);
        assert!(RecordPage::from_get_answer_raw(short).is_err());
    }

    #[test]
    fn ragged_columns_and_bad_json_are_refused() {
        assert!(RecordPage::from_get_answer(br#"{"ids":["a"],"documents":[]}"#).is_err());
        assert!(RecordPage::from_get_answer(b"not json").is_err());
    }

    #[test]
    fn all_null_columns_are_left_out_of_an_add() {
        let page = RecordPage::from_get_answer(
            br#"{"ids":["a"],"embeddings":[[1.0]],"documents":[null],"metadatas":[{}],"uris":[null]}"#,
        )
        .unwrap();
        let add = page.add_payload();
        assert!(add.get("documents").is_none() && add.get("metadatas").is_none());
        assert!(add.get("uris").is_none());
    }
}
