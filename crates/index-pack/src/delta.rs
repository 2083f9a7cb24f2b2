//! Git's delta format: the base's size and the result's size as varints, then
//! instructions that copy a range of the base or insert literal bytes.

/// The shortest delta git applies.
const MIN_DELTA_BYTES: usize = 4;

/// A delta's (base size, result size), from its first bytes; `None` if they
/// are cut short or overflow.
pub(super) fn sizes(delta: &[u8]) -> Option<(u64, u64)> {
    let (base, rest) = varint(delta)?;
    let (result, _) = varint(rest)?;
    Some((base, result))
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate() {
        let shift = 7 * i as u32;
        let part = u64::from(byte & 0x7f);
        if shift > 63 || (part << shift) >> shift != part {
            return None;
        }
        value |= part << shift;
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Builds the object `delta` describes from `base`. Every size and range is
/// the sender's claim and checked against the data; the result is at most
/// `limit` bytes.
pub(super) fn apply(base: &[u8], delta: &[u8], limit: u64) -> Result<Vec<u8>, &'static str> {
    // git's patch_delta refuses anything shorter (DELTA_SIZE_MIN): two
    // sizes and one instruction at the least.
    if delta.len() < MIN_DELTA_BYTES {
        return Err("delta is shorter than the 4 bytes git requires");
    }
    let (base_size, rest) = varint(delta).ok_or("delta header is malformed")?;
    let (result_size, mut ops) = varint(rest).ok_or("delta header is malformed")?;
    if base_size != base.len() as u64 {
        return Err("delta expects a base of another size");
    }
    if result_size > limit {
        return Err("delta result is over max_object_bytes");
    }
    let result_size = usize::try_from(result_size).map_err(|_| "delta result is too large")?;
    let mut out = Vec::with_capacity(result_size);
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        let piece = if op & 0x80 != 0 {
            let (offset, size, rest) = copy_range(op, ops)?;
            ops = rest;
            base.get(offset..offset.checked_add(size).ok_or("delta copy overflows")?)
                .ok_or("delta copies from outside its base")?
        } else if op != 0 {
            let (literal, rest) = ops
                .split_at_checked(usize::from(op))
                .ok_or("delta insert runs past its end")?;
            ops = rest;
            literal
        } else {
            return Err("delta uses the reserved instruction 0");
        };
        if out.len() + piece.len() > result_size {
            return Err("delta builds more than its header says");
        }
        out.extend_from_slice(piece);
    }
    if out.len() != result_size {
        return Err("delta builds less than its header says");
    }
    Ok(out)
}

/// A copy instruction's base range: bits 0-3 of `op` say which offset bytes
/// follow, bits 4-6 which size bytes; a size of 0 means 64 KiB.
fn copy_range(op: u8, mut ops: &[u8]) -> Result<(usize, usize, &[u8]), &'static str> {
    let mut field = |bits: u8, count: u32| -> Result<usize, &'static str> {
        let mut value = 0usize;
        for i in 0..count {
            if bits & (1 << i) != 0 {
                let (&byte, rest) = ops.split_first().ok_or("delta copy is cut short")?;
                ops = rest;
                value |= usize::from(byte) << (8 * i);
            }
        }
        Ok(value)
    };
    let offset = field(op & 0x0f, 4)?;
    let size = match field((op >> 4) & 0x07, 3)? {
        0 => 0x10000,
        size => size,
    };
    Ok((offset, size, ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_inserts_build_the_result() {
        // base "hello world", result "hello there world!": copy 0..6,
        // insert "there ", copy 6..11, insert "!".
        let delta = [
            &[11, 18][..],
            &[0x90, 6],
            &[6],
            b"there ",
            &[0x91, 6, 5],
            &[1, b'!'],
        ]
        .concat();
        assert_eq!(
            apply(b"hello world", &delta, 1 << 20).unwrap(),
            b"hello there world!"
        );
        assert_eq!(sizes(&delta), Some((11, 18)));
    }

    #[test]
    fn lying_deltas_are_refused() {
        let base = b"0123456789";
        // Wrong base size, copy past the base, result longer and shorter than
        // claimed, reserved opcode, too short for git, cut-short insert,
        // result over the limit.
        for (delta, why) in [
            (vec![9, 1, 1, b'x'], "another size"),
            (vec![10, 4, 0x91, 8, 4], "outside its base"),
            (vec![10, 1, 2, b'x', b'y'], "more than"),
            (vec![10, 3, 1, b'x'], "less than"),
            (vec![10, 1, 0, 0], "reserved"),
            (vec![0, 0], "shorter than"),
            (vec![10, 5, 5, b'x'], "past its end"),
            (vec![10, 0x80, 0x80, 0x04], "max_object_bytes"),
        ] {
            let error = apply(base, &delta, 1 << 12).unwrap_err();
            assert!(error.contains(why), "{delta:?}: {error}");
        }
    }
}
