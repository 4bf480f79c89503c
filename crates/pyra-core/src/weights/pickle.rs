//! A restricted unpickler for PyTorch state dicts.
//!
//! Written by hand on purpose: a `.pt` file is a pickle, and a general unpickler (or a crate that
//! resolves arbitrary globals) would let a file name any callable. This reader is the Rust
//! counterpart of PyTorch's `weights_only=True`: it understands exactly the opcodes that
//! `torch.save(state_dict)` emits (protocols 2-5) and accepts only the globals a state dict needs
//! (`collections.OrderedDict`, the tensor rebuild helpers and the typed storage classes).
//! Anything else is refused with an error naming it, and nothing is ever called: the few allowed
//! "calls" are interpreted as data constructors.

use std::collections::HashMap;

use super::WeightsError;

/// Element type of a PyTorch storage class (`torch.FloatStorage`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDType {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// A tensor as the pickle describes it: a strided view into a named storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage_key: String,
    pub dtype: StorageDType,
    pub storage_numel: usize,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The values a state-dict pickle can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Dicts keep insertion order (state dicts are `OrderedDict`s).
    Dict(Vec<(Value, Value)>),
    /// An allowed global, not yet applied.
    Global(AllowedGlobal),
    /// A storage persistent id: `('storage', StorageClass, key, location, numel)`.
    Storage {
        dtype: StorageDType,
        key: String,
        numel: usize,
    },
    Tensor(TensorRef),
}

/// The only globals a state dict may reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AllowedGlobal {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageClass(StorageDType),
}

fn resolve_global(module: &str, name: &str) -> Result<AllowedGlobal, WeightsError> {
    let global = match (module, name) {
        ("collections", "OrderedDict") => AllowedGlobal::OrderedDict,
        // v1 (torch <= 0.3, legacy files) takes the same first four arguments.
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            AllowedGlobal::RebuildTensorV2
        }
        ("torch._utils", "_rebuild_parameter") => AllowedGlobal::RebuildParameter,
        ("torch", class) => match StorageDType::from_class(class) {
            Some(dtype) => AllowedGlobal::StorageClass(dtype),
            None => return Err(refused(module, name)),
        },
        _ => return Err(refused(module, name)),
    };
    Ok(global)
}

fn refused(module: &str, name: &str) -> WeightsError {
    WeightsError::UnsafePickle(format!(
        "it references the global `{module}.{name}`, which a plain state dict never contains \
         (only tensors, storages and OrderedDicts are allowed, as with torch.load(weights_only=True)); \
         the file was not executed"
    ))
}

fn malformed(what: impl Into<String>) -> WeightsError {
    WeightsError::Malformed(what.into())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WeightsError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| malformed("the pickle stream ends in the middle of an opcode"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, WeightsError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WeightsError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, WeightsError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, WeightsError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<&'a str, WeightsError> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| malformed("unterminated text line in the pickle stream"))?;
        let text = std::str::from_utf8(&rest[..n])
            .map_err(|_| malformed("a text line in the pickle stream is not UTF-8"))?;
        self.pos += n + 1;
        Ok(text)
    }
    fn utf8(&mut self, n: usize) -> Result<String, WeightsError> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a pickled string is not UTF-8"))
    }
}

/// Stack items: values, or the MARK sentinel.
enum Item {
    Mark,
    Value(Value),
}

struct Machine {
    stack: Vec<Item>,
    memo: HashMap<u32, Value>,
    /// What memo and DUP copies have cost so far (see [`copy_cost`]).
    copied: usize,
}

/// Python's pickle shares memoized objects; this machine copies them. A list that holds its
/// memoized predecessor twice, thirty times over, would copy 2^30 values from a few hundred
/// bytes, so copies are budgeted. A real state dict copies about a hundred units (values and
/// string bytes) per tensor: the budget allows some 150,000 tensors.
const COPY_BUDGET: usize = 1 << 24;

/// A state dict nests four deep (dict, tensor args, size tuple, int); the limit leaves room for
/// wrappers and metadata while keeping every recursive walk (drop, clone, compare) shallow, so
/// a crafted file cannot overflow the stack.
const MAX_NESTING: usize = 64;

/// Refuse `value`, placed at nesting level `depth`, if it reaches deeper than [`MAX_NESTING`];
/// walks iteratively, and only as deep as the limit.
fn check_nesting(value: &Value, depth: usize) -> Result<(), WeightsError> {
    let mut pending = vec![(value, depth)];
    while let Some((value, depth)) = pending.pop() {
        if depth > MAX_NESTING {
            return Err(malformed(format!(
                "the pickle nests containers more than {MAX_NESTING} deep; a state dict never does"
            )));
        }
        match value {
            Value::Tuple(items) | Value::List(items) => {
                pending.extend(items.iter().map(|v| (v, depth + 1)))
            }
            Value::Dict(items) => {
                for (k, v) in items {
                    pending.push((k, depth + 1));
                    pending.push((v, depth + 1));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Values plus string/byte lengths: what copying `value` costs in time and memory.
fn copy_cost(value: &Value) -> usize {
    match value {
        Value::Str(s) => 1 + s.len(),
        Value::Bytes(b) => 1 + b.len(),
        Value::Tuple(items) | Value::List(items) => 1 + items.iter().map(copy_cost).sum::<usize>(),
        Value::Dict(items) => {
            1 + items
                .iter()
                .map(|(k, v)| copy_cost(k) + copy_cost(v))
                .sum::<usize>()
        }
        Value::Storage { key, .. } => 1 + key.len(),
        Value::Tensor(t) => 1 + t.storage_key.len() + t.size.len() + t.stride.len(),
        _ => 1,
    }
}

impl Machine {
    fn push(&mut self, value: Value) {
        self.stack.push(Item::Value(value));
    }
    /// Push a container just built from stack items, refusing runaway nesting.
    fn push_nested(&mut self, value: Value) -> Result<(), WeightsError> {
        check_nesting(&value, 1)?;
        self.push(value);
        Ok(())
    }
    fn pop(&mut self) -> Result<Value, WeightsError> {
        match self.stack.pop() {
            Some(Item::Value(v)) => Ok(v),
            Some(Item::Mark) => Err(malformed("unexpected MARK on the pickle stack")),
            None => Err(malformed("pickle stack underflow")),
        }
    }
    fn top(&mut self) -> Result<&mut Value, WeightsError> {
        match self.stack.last_mut() {
            Some(Item::Value(v)) => Ok(v),
            _ => Err(malformed("pickle stack underflow")),
        }
    }
    fn pop_to_mark(&mut self) -> Result<Vec<Value>, WeightsError> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Item::Mark) => break,
                Some(Item::Value(v)) => items.push(v),
                None => return Err(malformed("MARK not found on the pickle stack")),
            }
        }
        items.reverse();
        Ok(items)
    }
    /// Charge `cost` to the copy budget; an error once it is spent.
    fn charge(&mut self, cost: usize) -> Result<(), WeightsError> {
        self.copied = self.copied.saturating_add(cost);
        if self.copied > COPY_BUDGET {
            return Err(malformed(
                "the pickle re-uses its objects far more than a state dict does \
                 (a decompression bomb?)",
            ));
        }
        Ok(())
    }
    fn top_copy(&mut self) -> Result<Value, WeightsError> {
        let cost = copy_cost(self.top()?);
        self.charge(cost)?;
        Ok(self.top()?.clone())
    }
    fn memo_put(&mut self, index: u32) -> Result<(), WeightsError> {
        if !matches!(self.stack.last(), Some(Item::Value(_))) {
            return Err(malformed("memoizing an empty stack"));
        }
        let value = self.top_copy()?;
        self.memo.insert(index, value);
        Ok(())
    }
    fn memo_get(&mut self, index: u32) -> Result<(), WeightsError> {
        let missing = || malformed(format!("pickle memo entry {index} is missing"));
        let cost = copy_cost(self.memo.get(&index).ok_or_else(missing)?);
        self.charge(cost)?;
        let value = self.memo[&index].clone();
        self.push(value);
        Ok(())
    }
}

fn as_usize(value: &Value, what: &str) -> Result<usize, WeightsError> {
    match value {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(malformed(format!("{what} is not a non-negative integer"))),
    }
}

fn as_usize_tuple(value: &Value, what: &str) -> Result<Vec<usize>, WeightsError> {
    match value {
        Value::Tuple(items) | Value::List(items) => {
            items.iter().map(|v| as_usize(v, what)).collect()
        }
        _ => Err(malformed(format!("{what} is not a tuple"))),
    }
}

/// Interpret a REDUCE of an allowed global. Nothing is executed.
fn apply(global: AllowedGlobal, args: Value) -> Result<Value, WeightsError> {
    let args = match args {
        Value::Tuple(args) => args,
        _ => return Err(malformed("REDUCE arguments are not a tuple")),
    };
    match global {
        AllowedGlobal::OrderedDict => {
            if args.is_empty() {
                Ok(Value::Dict(Vec::new()))
            } else {
                Err(malformed("OrderedDict built with arguments"))
            }
        }
        AllowedGlobal::RebuildTensorV2 => {
            if args.len() < 4 {
                return Err(malformed("_rebuild_tensor_v2 with fewer than 4 arguments"));
            }
            let (dtype, key, numel) = match &args[0] {
                Value::Storage { dtype, key, numel } => (*dtype, key.clone(), *numel),
                _ => return Err(malformed("_rebuild_tensor_v2 without a storage")),
            };
            let offset = as_usize(&args[1], "tensor storage offset")?;
            let size = as_usize_tuple(&args[2], "tensor size")?;
            let stride = as_usize_tuple(&args[3], "tensor stride")?;
            if size.len() != stride.len() {
                return Err(malformed("tensor size and stride have different ranks"));
            }
            Ok(Value::Tensor(TensorRef {
                storage_key: key,
                dtype,
                storage_numel: numel,
                offset,
                size,
                stride,
            }))
        }
        AllowedGlobal::RebuildParameter => match args.into_iter().next() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor),
            _ => Err(malformed("_rebuild_parameter without a tensor")),
        },
        AllowedGlobal::StorageClass(_) => Err(malformed("a storage class cannot be called")),
    }
}

fn persistent_load(pid: Value) -> Result<Value, WeightsError> {
    let items = match pid {
        Value::Tuple(items) => items,
        _ => return Err(malformed("persistent id is not a tuple")),
    };
    match items.as_slice() {
        // The zip format's 5-tuple, and the legacy format's 6-tuple whose last item (a view
        // of another storage) is None in every file torch >= 0.4 wrote.
        [Value::Str(kind), Value::Global(AllowedGlobal::StorageClass(dtype)), Value::Str(key), _location, numel]
        | [Value::Str(kind), Value::Global(AllowedGlobal::StorageClass(dtype)), Value::Str(key), _location, numel, Value::None]
            if kind == "storage" =>
        {
            Ok(Value::Storage {
                dtype: *dtype,
                key: key.clone(),
                numel: as_usize(numel, "storage size")?,
            })
        }
        _ => Err(malformed(
            "persistent id is not ('storage', StorageClass, key, location, numel)",
        )),
    }
}

/// Run the restricted unpickler over `bytes` and return the top-level value.
pub fn unpickle(bytes: &[u8]) -> Result<Value, WeightsError> {
    unpickle_prefix(bytes).map(|(value, _)| value)
}

/// Unpickle the first pickle of `bytes` (legacy torch files hold several in a row): its value
/// and the bytes it took, up to and including its STOP.
pub fn unpickle_prefix(bytes: &[u8]) -> Result<(Value, usize), WeightsError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut m = Machine {
        stack: Vec::new(),
        memo: HashMap::new(),
        copied: 0,
    };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(malformed(format!("unsupported pickle protocol {proto}")));
                }
            }
            0x95 => {
                r.u64()?; // FRAME: a length hint only.
            }
            b'.' => return Ok((m.pop()?, r.pos)),
            b'(' => m.stack.push(Item::Mark),
            b'N' => m.push(Value::None),
            0x88 => m.push(Value::Bool(true)),
            0x89 => m.push(Value::Bool(false)),
            b'J' => m.push(Value::Int(r.u32()? as i32 as i64)),
            b'K' => m.push(Value::Int(r.u8()? as i64)),
            b'M' => m.push(Value::Int(r.u16()? as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let bytes = r.take(n)?;
                if n > 8 {
                    return Err(malformed("integer wider than 64 bits"));
                }
                let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                    [0xffu8; 8]
                } else {
                    [0u8; 8]
                };
                buf[..n].copy_from_slice(bytes);
                m.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => m.push(Value::Float(f64::from_be_bytes(
                r.take(8)?.try_into().unwrap(),
            ))),
            b'X' => {
                let n = r.u32()? as usize;
                m.push(Value::Str(r.utf8(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                m.push(Value::Str(r.utf8(n)?));
            }
            0x8d => {
                let n = r.u64()? as usize;
                m.push(Value::Str(r.utf8(n)?));
            }
            b'T' => {
                let n = r.u32()? as usize;
                m.push(Value::Str(r.utf8(n)?));
            }
            b'U' => {
                let n = r.u8()? as usize;
                m.push(Value::Str(r.utf8(n)?));
            }
            b'B' => {
                let n = r.u32()? as usize;
                m.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'C' => {
                let n = r.u8()? as usize;
                m.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b')' => m.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = m.pop_to_mark()?;
                m.push_nested(Value::Tuple(items))?;
            }
            0x85 => {
                let a = m.pop()?;
                m.push_nested(Value::Tuple(vec![a]))?;
            }
            0x86 => {
                let b = m.pop()?;
                let a = m.pop()?;
                m.push_nested(Value::Tuple(vec![a, b]))?;
            }
            0x87 => {
                let c = m.pop()?;
                let b = m.pop()?;
                let a = m.pop()?;
                m.push_nested(Value::Tuple(vec![a, b, c]))?;
            }
            b']' => m.push(Value::List(Vec::new())),
            b'l' => {
                let items = m.pop_to_mark()?;
                m.push_nested(Value::List(items))?;
            }
            b'}' => m.push(Value::Dict(Vec::new())),
            b'd' => {
                let items = m.pop_to_mark()?;
                m.push_nested(Value::Dict(pairs(items)?))?;
            }
            b'a' => {
                let item = m.pop()?;
                check_nesting(&item, 2)?;
                match m.top()? {
                    Value::List(list) => list.push(item),
                    _ => return Err(malformed("APPEND to a non-list")),
                }
            }
            b'e' => {
                let items = m.pop_to_mark()?;
                items.iter().try_for_each(|item| check_nesting(item, 2))?;
                match m.top()? {
                    Value::List(list) => list.extend(items),
                    _ => return Err(malformed("APPENDS to a non-list")),
                }
            }
            b's' => {
                let value = m.pop()?;
                let key = m.pop()?;
                check_nesting(&key, 2)?;
                check_nesting(&value, 2)?;
                match m.top()? {
                    Value::Dict(dict) => dict.push((key, value)),
                    _ => return Err(malformed("SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = pairs(m.pop_to_mark()?)?;
                for (key, value) in &items {
                    check_nesting(key, 2)?;
                    check_nesting(value, 2)?;
                }
                match m.top()? {
                    Value::Dict(dict) => dict.extend(items),
                    _ => return Err(malformed("SETITEMS on a non-dict")),
                }
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                m.push(Value::Global(resolve_global(&module, &name)?));
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => {
                        m.push(Value::Global(resolve_global(&module, &name)?))
                    }
                    _ => return Err(malformed("STACK_GLOBAL operands are not strings")),
                }
            }
            b'R' => {
                let args = m.pop()?;
                let callable = m.pop()?;
                match callable {
                    Value::Global(global) => m.push(apply(global, args)?),
                    _ => return Err(malformed("REDUCE of something that is not a global")),
                }
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args); only OrderedDict is allowed to get here.
                let args = m.pop()?;
                let cls = m.pop()?;
                match cls {
                    Value::Global(global @ AllowedGlobal::OrderedDict) => {
                        m.push(apply(global, args)?)
                    }
                    _ => return Err(malformed("NEWOBJ of something other than OrderedDict")),
                }
            }
            b'b' => {
                // BUILD sets attributes from a state dict. A state dict's only attribute is
                // `_metadata` (module versions), which carries no weights: checked and dropped.
                let state = m.pop()?;
                match (m.top()?, state) {
                    (Value::Dict(_), Value::Dict(_) | Value::None) => {}
                    _ => return Err(malformed("BUILD on an object that is not a state dict")),
                }
            }
            b'Q' => {
                let pid = m.pop()?;
                m.push(persistent_load(pid)?);
            }
            b'q' => {
                let i = r.u8()? as u32;
                m.memo_put(i)?;
            }
            b'r' => {
                let i = r.u32()?;
                m.memo_put(i)?;
            }
            0x94 => {
                let i = m.memo.len() as u32;
                m.memo_put(i)?;
            }
            b'h' => {
                let i = r.u8()? as u32;
                m.memo_get(i)?;
            }
            b'j' => {
                let i = r.u32()?;
                m.memo_get(i)?;
            }
            b'0' => {
                m.stack
                    .pop()
                    .ok_or_else(|| malformed("POP on an empty stack"))?;
            }
            b'1' => {
                m.pop_to_mark()?;
            }
            b'2' => {
                let top = m.top_copy()?;
                m.push(top);
            }
            other => {
                return Err(WeightsError::UnsafePickle(format!(
                    "it uses the pickle opcode 0x{other:02x} ({}), which a plain state dict never \
                     contains; the file was not executed",
                    opcode_name(other)
                )))
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, WeightsError> {
    if !items.len().is_multiple_of(2) {
        return Err(malformed("odd number of items in a dict"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x82..=0x84 => "EXT",
        b'P' => "PERSID",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'g' => "GET",
        b'p' => "PUT",
        0x92 => "NEWOBJ_EX",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system() {
        // `cos\nsystem\n(S'echo hi'\ntR.` — the classic malicious pickle.
        let evil = b"cos\nsystem\n(S'echo hi'\ntR.";
        let err = unpickle(evil).unwrap_err().to_string();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn reads_nested_containers() {
        // pickle.dumps({'a': (1, 2.5, True)}, protocol=2)
        let bytes: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01G@\x04\x00\x00\x00\x00\x00\x00\x88\x87q\x02s.";
        let v = unpickle(bytes).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![(
                Value::Str("a".into()),
                Value::Tuple(vec![Value::Int(1), Value::Float(2.5), Value::Bool(true)])
            )])
        );
    }

    #[test]
    fn memo_reuse_bomb_is_refused() {
        // Level i is a list holding level i-1 twice: 2^40 values from 330 bytes if copied.
        // Python itself (which shares) unpickles this fine; the point is that Pyra must not
        // try to materialise it.
        let mut bytes = b"\x80\x02]q\x00".to_vec();
        for level in 1..=40u8 {
            bytes.extend_from_slice(&[b']', b'(', b'h', level - 1, b'h', level - 1, b'e']);
            bytes.extend_from_slice(&[b'q', level]);
        }
        bytes.push(b'.');
        let err = unpickle(&bytes).unwrap_err().to_string();
        assert!(err.contains("re-uses its objects"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_or_read_without_overflow() {
        // 30,000 lists, each appended into the one below: a stack overflow if anything
        // walks the result recursively without a limit.
        let mut bytes = b"\x80\x02".to_vec();
        bytes.extend(std::iter::repeat_n(b']', 30_000));
        bytes.extend(std::iter::repeat_n(b'a', 29_999));
        bytes.push(b'.');
        let result = unpickle(&bytes);
        assert!(result.is_err(), "a 30,000-deep pickle was accepted");
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let bytes: &[u8] = b"\x80\x02}q\x00X\x01\x00";
        assert!(unpickle(bytes).is_err());
    }
}
