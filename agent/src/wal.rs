//! Whose data the etcd data dir holds: the member and cluster ids etcd writes into the head of
//! every WAL file, read before a wipe so that the agent never empties a data dir that belongs
//! to a member other than the one the coordinator means.
//!
//! The format (etcd 3.4 and 3.5, `server/storage/wal`): a WAL file is a sequence of frames,
//! each an 8-byte little-endian length word followed by a `walpb.Record` and padding to 8
//! bytes. The low 56 bits of the word are the record's length; when its top bit is set, the
//! low 3 bits of its top byte are the padding. A record is the protobuf
//! `{ int64 type = 1; uint32 crc = 2; bytes data = 3; }`; a new file starts with a CRC record
//! (type 4) and then the metadata record (type 1), whose data is
//! `etcdserverpb.Metadata { uint64 NodeID = 1; uint64 ClusterID = 2; }`.

use std::fmt;

/// How many bytes of the WAL's head are read: the metadata record is the second frame, a few
/// dozen bytes in.
pub const HEAD_LIMIT: usize = 64 * 1024;

/// The record type of the metadata record.
const METADATA_TYPE: u64 = 1;
/// Frames read before giving up on finding the metadata record.
const MAX_FRAMES: usize = 8;

/// A member of a cluster, as etcd numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The member id (`NodeID`).
    pub member: u64,
    /// The cluster id (`ClusterID`).
    pub cluster: u64,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex, as `etcdctl member list` shows ids.
        write!(f, "member {:x} of cluster {:x}", self.member, self.cluster)
    }
}

/// Reads the identity from the head of a WAL file; says what is wrong when it cannot.
pub fn parse_identity(head: &[u8]) -> Result<Identity, String> {
    let mut rest = head;
    for _ in 0..MAX_FRAMES {
        let Some((word, after)) = rest.split_first_chunk::<8>() else {
            return Err("the file ends before its metadata record".into());
        };
        let word = u64::from_le_bytes(*word);
        let len = usize::try_from(word & !(0xff_u64 << 56))
            .map_err(|_| "a record length does not fit in memory".to_string())?;
        let pad = if word >> 63 == 1 {
            ((word >> 56) & 0x7) as usize
        } else {
            0
        };
        if len == 0 {
            return Err("the file holds no record (a zero-length frame)".into());
        }
        let record = after
            .get(..len)
            .ok_or_else(|| format!("a record of {len} bytes runs past the part read"))?;
        let (kind, data) = record_fields(record)?;
        if kind == METADATA_TYPE {
            return metadata(data);
        }
        rest = after
            .get(len + pad..)
            .ok_or_else(|| "the padding of a record runs past the part read".to_string())?;
    }
    Err(format!(
        "no metadata record among the first {MAX_FRAMES} records"
    ))
}

/// `type` and `data` of a `walpb.Record`.
fn record_fields(mut buf: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut kind = None;
    let mut data: &[u8] = &[];
    while !buf.is_empty() {
        let (key, after) = varint(buf)?;
        buf = after;
        match (key >> 3, key & 7) {
            (1, 0) => {
                let (v, after) = varint(buf)?;
                kind = Some(v);
                buf = after;
            }
            (3, 2) => {
                let (bytes, after) = length_delimited(buf)?;
                data = bytes;
                buf = after;
            }
            (_, wire) => buf = skip(buf, wire)?,
        }
    }
    let kind = kind.ok_or("a record without a type")?;
    Ok((kind, data))
}

/// `NodeID` and `ClusterID` of an `etcdserverpb.Metadata`.
fn metadata(mut buf: &[u8]) -> Result<Identity, String> {
    let (mut member, mut cluster) = (None, None);
    while !buf.is_empty() {
        let (key, after) = varint(buf)?;
        buf = after;
        match (key >> 3, key & 7) {
            (1, 0) => {
                let (v, after) = varint(buf)?;
                member = Some(v);
                buf = after;
            }
            (2, 0) => {
                let (v, after) = varint(buf)?;
                cluster = Some(v);
                buf = after;
            }
            (_, wire) => buf = skip(buf, wire)?,
        }
    }
    match (member, cluster) {
        (Some(member), Some(cluster)) if member != 0 && cluster != 0 => {
            Ok(Identity { member, cluster })
        }
        _ => Err("the metadata record names no member and cluster id".into()),
    }
}

fn varint(buf: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, &buf[i + 1..]));
        }
    }
    Err("a malformed varint".into())
}

fn length_delimited(buf: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (len, rest) = varint(buf)?;
    let len = usize::try_from(len).map_err(|_| "a field too long".to_string())?;
    if rest.len() < len {
        return Err("a field runs past its record".into());
    }
    Ok(rest.split_at(len))
}

fn skip(buf: &[u8], wire: u64) -> Result<&[u8], String> {
    match wire {
        0 => varint(buf).map(|(_, r)| r),
        1 => buf
            .get(8..)
            .ok_or_else(|| "a field runs past its record".into()),
        2 => length_delimited(buf).map(|(_, r)| r),
        5 => buf
            .get(4..)
            .ok_or_else(|| "a field runs past its record".into()),
        w => Err(format!(
            "a field of wire type {w}, which a WAL record does not use"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of a WAL that etcd 3.4.23 wrote for a single member (`etcdctl member list`:
    /// member bac7efc361f1457e, cluster 6c438ba6ce8a0f60): the CRC frame, then metadata.
    const HEAD: [u8; 56] = [
        0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x84, 0x08, 0x04, 0x10, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x81, 0x08, 0x01, 0x10, 0xfe, 0xe1, 0x84,
        0x80, 0x0f, 0x1a, 0x15, 0x08, 0xfe, 0x8a, 0xc5, 0x8f, 0xb6, 0xf8, 0xfb, 0xe3, 0xba, 0x01,
        0x10, 0xe0, 0x9e, 0xa8, 0xf4, 0xec, 0xf4, 0xe2, 0xa1, 0x6c, 0x00,
    ];

    #[test]
    fn etcds_own_wal_head_reads_as_its_member_and_cluster() {
        assert_eq!(
            parse_identity(&HEAD),
            Ok(Identity {
                member: 0xbac7efc361f1457e,
                cluster: 0x6c438ba6ce8a0f60
            })
        );
        assert_eq!(
            parse_identity(&HEAD).map(|i| i.to_string()),
            Ok("member bac7efc361f1457e of cluster 6c438ba6ce8a0f60".to_string())
        );
    }

    #[test]
    fn a_cut_or_garbled_head_is_an_error_never_a_guess() {
        for n in [0, 7, 8, 12, 20, 40] {
            assert!(parse_identity(&HEAD[..n]).is_err(), "{n} bytes");
        }
        assert!(parse_identity(&[0u8; 64]).is_err());
        assert!(parse_identity(&[0xffu8; 64]).is_err());
        let mut zero_ids = HEAD;
        zero_ids[35..45].copy_from_slice(&[0x00; 10]);
        assert!(parse_identity(&zero_ids).is_err());
    }
}
