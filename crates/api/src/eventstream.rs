//! AWS event-stream framing, for InvokeWithResponseStream (docs/lambda-contract.md §2.4):
//! each message is a prelude (total length, headers length, CRC-32 of the two), string
//! headers, the payload, and a CRC-32 of everything before it.

use bytes::{BufMut, Bytes, BytesMut};

/// Header value type 7: a UTF-8 string with a 16-bit length.
const STRING: u8 = 7;

/// One message with string headers.
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = BytesMut::new();
    for (name, value) in headers {
        h.put_u8(name.len() as u8);
        h.put_slice(name.as_bytes());
        h.put_u8(STRING);
        h.put_u16(value.len() as u16);
        h.put_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut m = BytesMut::with_capacity(total);
    m.put_u32(total as u32);
    m.put_u32(h.len() as u32);
    let prelude_crc = crc32fast::hash(&m[..8]);
    m.put_u32(prelude_crc);
    m.put_slice(&h);
    m.put_slice(payload);
    let crc = crc32fast::hash(&m);
    m.put_u32(crc);
    m.freeze()
}

/// A `PayloadChunk` event carrying part of the function's response.
pub fn payload_chunk(data: &[u8]) -> Bytes {
    message(
        &[(":event-type", "PayloadChunk"), (":content-type", "application/octet-stream"), (":message-type", "event")],
        data,
    )
}

/// The closing `InvokeComplete` event (JSON with `ErrorCode`, `ErrorDetails`, `LogResult`).
pub fn invoke_complete(json: &serde_json::Value) -> Bytes {
    message(
        &[(":event-type", "InvokeComplete"), (":content-type", "application/json"), (":message-type", "event")],
        json.to_string().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one message back: (headers, payload), checking both checksums.
    fn parse(m: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let hlen = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), crc32fast::hash(&m[..8]));
        assert_eq!(u32::from_be_bytes(m[total - 4..].try_into().unwrap()), crc32fast::hash(&m[..total - 4]));
        let mut headers = Vec::new();
        let mut i = 12;
        while i < 12 + hlen {
            let n = m[i] as usize;
            let name = String::from_utf8(m[i + 1..i + 1 + n].to_vec()).unwrap();
            i += 1 + n;
            assert_eq!(m[i], STRING);
            let len = u16::from_be_bytes(m[i + 1..i + 3].try_into().unwrap()) as usize;
            headers.push((name, String::from_utf8(m[i + 3..i + 3 + len].to_vec()).unwrap()));
            i += 3 + len;
        }
        (headers, m[12 + hlen..total - 4].to_vec())
    }

    #[test]
    fn frames_round_trip_with_valid_checksums() {
        let (headers, payload) = parse(&payload_chunk(b"hello"));
        assert_eq!(payload, b"hello");
        assert!(headers.contains(&(":event-type".into(), "PayloadChunk".into())));
        let (headers, payload) = parse(&invoke_complete(&serde_json::json!({"LogResult": "eA=="})));
        assert_eq!(payload, br#"{"LogResult":"eA=="}"#);
        assert!(headers.contains(&(":event-type".into(), "InvokeComplete".into())));
        // CRC-32/IEEE, not CRC-32C.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }
}
