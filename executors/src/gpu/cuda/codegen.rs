//! Writing a plan's kernel as CUDA C: its parameters, the filter and aggregate arguments as
//! straight-line statements with null flags and overflow checks, the group slot, the
//! accumulator updates and the merge of per-block accumulators, on top of a fixed prelude of
//! helpers.

use std::fmt::Write as _;

use super::GpuError;
use super::layout::{Layout, Word};
use super::pack::Column;
use crate::gpu::plan::{AggFunc, ArithOp, CmpOp, Expr, KernelPlan, Lit, Ty};
use crate::gpu::reference::Dictionary;

/// The CUDA C source of the plan's kernel.
pub(super) fn kernel_source(
    plan: &KernelPlan,
    columns: &[Column],
    layout: &Layout,
    dictionary: &Dictionary,
) -> Result<String, GpuError> {
    let mut params = vec!["const long long n".to_string()];
    for (i, column) in columns.iter().enumerate() {
        params.push(format!(
            "const {}* __restrict__ c{i}",
            column.values.c_type()
        ));
        if column.valid.is_some() {
            params.push(format!("const unsigned char* __restrict__ m{i}"));
        }
    }
    params.push("unsigned long long* __restrict__ acc".into());
    params.push("int* __restrict__ failed".into());

    let mut body = Body {
        code: String::new(),
        next: 0,
        columns,
        dictionary,
    };
    let filter = match &plan.filter {
        Some(filter) => {
            let (v, ok) = body.expr(filter)?;
            format!("if (!({ok} && {v})) continue;")
        }
        None => String::new(),
    };
    let filter_code = std::mem::take(&mut body.code);

    // The slot: mixed radix over the keys, the last key fastest.
    let mut slot = String::from("unsigned long long slot = 0;\n");
    for (index, lo, count) in &layout.keys {
        let c = &columns[*index];
        let valid = if c.valid.is_some() {
            format!("m{index}[i]")
        } else {
            "1".into()
        };
        let _ = writeln!(
            slot,
            "slot = slot * {count}ULL + ({valid} ? (unsigned long long)((long long)c{index}[i] - ({lo}LL)) : {last}ULL);",
            last = count - 1
        );
    }

    let mut updates = String::new();
    let _ = writeln!(updates, "atomicAdd(&a[base], 1ULL);");
    for (aggregate, &offset) in plan.aggregates.iter().zip(&layout.offsets) {
        let (v, ok) = body.expr(&aggregate.arg)?;
        let code = std::mem::take(&mut body.code);
        let w = format!("base + {offset}");
        let float = aggregate.arg.ty() == Ty::Float;
        let update = match aggregate.func {
            AggFunc::Count => format!("atomicAdd(&a[{w}], 1ULL);"),
            AggFunc::Sum | AggFunc::Avg if float => {
                format!("atomicAdd((double*)&a[{w}], {v}); atomicAdd(&a[{w} + 1], 1ULL);")
            }
            AggFunc::Sum | AggFunc::Avg => {
                format!("add128(&a[{w}], (long long){v}); atomicAdd(&a[{w} + 2], 1ULL);")
            }
            AggFunc::Min | AggFunc::Max => {
                let f = if aggregate.func == AggFunc::Min {
                    "atomicMin"
                } else {
                    "atomicMax"
                };
                let key = if float {
                    format!("ordered({v})")
                } else {
                    format!("(long long){v}")
                };
                format!("{f}((long long*)&a[{w}], {key}); atomicAdd(&a[{w} + 1], 1ULL);")
            }
        };
        let _ = writeln!(updates, "{{\n{code}if ({ok}) {{ {update} }}\n}}");
    }

    let stride = layout.stride;
    let words = layout.words();
    let shared = layout.shared();
    let kinds: Vec<String> = layout
        .kinds
        .iter()
        .map(|k| {
            match k {
                Word::Add => "0",
                Word::High => "1",
                Word::AddF64 => "2",
                Word::Min => "3",
                Word::Max => "4",
            }
            .to_string()
        })
        .collect();
    let mut src = String::new();
    let _ = writeln!(
        src,
        "#define STRIDE {stride}\n__constant__ int kinds[STRIDE] = {{{}}};",
        kinds.join(", ")
    );
    src.push_str(PRELUDE);
    let _ = writeln!(
        src,
        "extern \"C\" __global__ void amdahl_plan({}) {{",
        params.join(", ")
    );
    if shared {
        let _ = writeln!(
            src,
            "extern __shared__ unsigned long long a[];\n\
             for (int w = threadIdx.x; w < {words}; w += blockDim.x) a[w] = identity(kinds[w % {stride}]);\n\
             __syncthreads();"
        );
    } else {
        src.push_str("unsigned long long* a = acc;\n");
    }
    let _ = writeln!(
        src,
        "bool bad = false;\n\
         for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {{\n\
         {filter_code}{filter}\n{slot}unsigned long long base = slot * {stride}ULL;\n{updates}}}\n\
         if (bad) atomicExch(failed, 1);"
    );
    if shared {
        let _ = writeln!(
            src,
            "__syncthreads();\n\
             for (int w = threadIdx.x; w < {words}; w += blockDim.x) {{\n\
               if (kinds[w % {stride}] == 1) continue; // high halves go with their low half\n\
               merge(acc, a, w);\n\
             }}"
        );
    }
    src.push_str("}\n");
    Ok(src)
}

/// Helpers every kernel uses.
const PRELUDE: &str = r#"
__device__ __forceinline__ long long ordered(double x) {
    long long b = __double_as_longlong(x);
    return b ^ (long long)(((unsigned long long)(b >> 63)) >> 1);
}
__device__ __forceinline__ bool total_lt(double x, double y) { return ordered(x + 0.0) < ordered(y + 0.0); }
__device__ __forceinline__ bool total_eq(double x, double y) { return ordered(x + 0.0) == ordered(y + 0.0); }
__device__ __forceinline__ unsigned long long identity(int kind) {
    return kind == 3 ? 0x7fffffffffffffffULL : (kind == 4 ? 0x8000000000000000ULL : 0ULL);
}
// Adds a signed 64-bit value to a 128-bit sum held as (low, high) words.
__device__ __forceinline__ void add128(unsigned long long* w, long long v) {
    unsigned long long u = (unsigned long long)v;
    unsigned long long old = atomicAdd(&w[0], u);
    unsigned long long carry = (old + u < old) ? 1ULL : 0ULL;
    unsigned long long high = (v < 0 ? 0xffffffffffffffffULL : 0ULL) + carry;
    if (high != 0ULL) atomicAdd(&w[1], high);
}
// Adds a block's word into the global accumulators (words of slots the block never saw stay
// out: they hold identities).
__device__ __forceinline__ void merge(unsigned long long* g, const unsigned long long* s, int w) {
    int at = w % STRIDE;
    int kind = kinds[at];
    if (s[w - at] == 0ULL) return;
    unsigned long long v = s[w];
    if (kind == 0) {
        bool wide = at + 1 < STRIDE && kinds[at + 1] == 1;
        unsigned long long carry = 0ULL;
        if (v != 0ULL) {
            unsigned long long old = atomicAdd(&g[w], v);
            carry = (old + v < old) ? 1ULL : 0ULL;
        }
        if (wide) {
            unsigned long long high = s[w + 1] + carry;
            if (high != 0ULL) atomicAdd(&g[w + 1], high);
        }
    } else if (kind == 2) {
        atomicAdd((double*)&g[w], __longlong_as_double((long long)v));
    } else if (kind == 3) {
        atomicMin((long long*)&g[w], (long long)v);
    } else if (kind == 4) {
        atomicMax((long long*)&g[w], (long long)v);
    }
}
__device__ __forceinline__ bool add_ck(long long a, long long b, long long* r) {
    *r = (long long)((unsigned long long)a + (unsigned long long)b);
    return ((a ^ *r) & (b ^ *r)) < 0;
}
__device__ __forceinline__ bool sub_ck(long long a, long long b, long long* r) {
    *r = (long long)((unsigned long long)a - (unsigned long long)b);
    return ((a ^ b) & (a ^ *r)) < 0;
}
__device__ __forceinline__ bool mul_ck(long long a, long long b, long long* r) {
    *r = (long long)((unsigned long long)a * (unsigned long long)b);
    long long high = __mul64hi(a, b);
    return high != (*r >> 63);
}
"#;

/// Writes the statements that evaluate expressions, one local pair (value, present) per node.
struct Body<'a> {
    code: String,
    next: usize,
    columns: &'a [Column],
    dictionary: &'a Dictionary,
}

impl Body<'_> {
    fn fresh(&mut self) -> (String, String) {
        self.next += 1;
        (format!("v{}", self.next), format!("k{}", self.next))
    }

    fn c_type(ty: Ty) -> &'static str {
        match ty {
            Ty::Bool => "bool",
            Ty::Float => "double",
            Ty::Text => "unsigned int",
            Ty::Int | Ty::Date | Ty::Decimal { .. } => "long long",
        }
    }

    fn literal(&self, value: &Lit, ty: Ty) -> Result<(String, bool), GpuError> {
        Ok(match value {
            Lit::Null => (format!("({})0", Self::c_type(ty)), false),
            Lit::Bool(b) => (b.to_string(), true),
            Lit::Int(i) => {
                let i = i64::try_from(*i).map_err(|_| {
                    GpuError::Unsupported(format!("the literal {i} (wider than 64 bits)"))
                })?;
                if i == i64::MIN {
                    ("(-9223372036854775807LL - 1)".into(), true)
                } else {
                    (format!("({i}LL)"), true)
                }
            }
            Lit::Float(f) => (
                format!("__longlong_as_double({}LL)", f.to_bits() as i64),
                true,
            ),
            Lit::Text(t) => (format!("{}U", self.dictionary.lookup(t)), true),
        })
    }

    /// Emits code for `expr`; returns the names of its value and its presence flag.
    fn expr(&mut self, expr: &Expr) -> Result<(String, String), GpuError> {
        let (v, k) = self.fresh();
        let ty = Self::c_type(expr.ty());
        match expr {
            Expr::Column { index, .. } => {
                let present = if self.columns[*index].valid.is_some() {
                    format!("m{index}[i] != 0")
                } else {
                    "true".into()
                };
                let _ = writeln!(
                    self.code,
                    "{ty} {v} = ({ty})c{index}[i]; bool {k} = {present};"
                );
            }
            Expr::Literal { value, ty: lty } => {
                let (value, present) = self.literal(value, *lty)?;
                let _ = writeln!(self.code, "{ty} {v} = {value}; bool {k} = {present};");
            }
            Expr::Compare { op, left, right } => {
                let float = left.ty() == Ty::Float;
                let (a, ka) = self.expr(left)?;
                let (b, kb) = self.expr(right)?;
                let (lt, eq) = if float {
                    (format!("total_lt({a}, {b})"), format!("total_eq({a}, {b})"))
                } else {
                    (format!("({a} < {b})"), format!("({a} == {b})"))
                };
                let gt = if float {
                    format!("total_lt({b}, {a})")
                } else {
                    format!("({a} > {b})")
                };
                let test = match op {
                    CmpOp::Eq => eq,
                    CmpOp::NotEq => format!("!{eq}"),
                    CmpOp::Lt => lt,
                    CmpOp::LtEq => format!("!{gt}"),
                    CmpOp::Gt => gt,
                    CmpOp::GtEq => format!("!{lt}"),
                };
                let _ = writeln!(
                    self.code,
                    "bool {k} = {ka} && {kb}; bool {v} = {k} && {test};"
                );
            }
            Expr::And(left, right) | Expr::Or(left, right) => {
                let (a, ka) = self.expr(left)?;
                let (b, kb) = self.expr(right)?;
                if matches!(expr, Expr::And(..)) {
                    let _ = writeln!(
                        self.code,
                        "bool f{v} = ({ka} && !{a}) || ({kb} && !{b}); bool {k} = f{v} || ({ka} && {kb}); bool {v} = !f{v} && {k};"
                    );
                } else {
                    let _ = writeln!(
                        self.code,
                        "bool t{v} = ({ka} && {a}) || ({kb} && {b}); bool {k} = t{v} || ({ka} && {kb}); bool {v} = t{v};"
                    );
                }
            }
            Expr::Not(inner) => {
                let (a, ka) = self.expr(inner)?;
                let _ = writeln!(self.code, "bool {k} = {ka}; bool {v} = {ka} && !{a};");
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let (_, ka) = self.expr(inner)?;
                let test = if matches!(expr, Expr::IsNull(_)) {
                    format!("!{ka}")
                } else {
                    ka
                };
                let _ = writeln!(self.code, "bool {k} = true; bool {v} = {test};");
            }
            Expr::Arith {
                op,
                left,
                right,
                ty: result,
            } => {
                let (a, ka) = self.expr(left)?;
                let (b, kb) = self.expr(right)?;
                let _ = writeln!(self.code, "bool {k} = {ka} && {kb}; {ty} {v} = 0;");
                if *result == Ty::Float {
                    let sign = match op {
                        ArithOp::Add => "+",
                        ArithOp::Sub => "-",
                        ArithOp::Mul => "*",
                    };
                    let _ = writeln!(self.code, "if ({k}) {v} = {a} {sign} {b};");
                } else {
                    let (mut a, mut b) = (a, b);
                    if matches!(op, ArithOp::Add | ArithOp::Sub) {
                        a = self.rescale(&a, result.scale() - left.ty().scale());
                        b = self.rescale(&b, result.scale() - right.ty().scale());
                    }
                    let f = match op {
                        ArithOp::Add => "add_ck",
                        ArithOp::Sub => "sub_ck",
                        ArithOp::Mul => "mul_ck",
                    };
                    let _ = writeln!(self.code, "if ({k}) bad |= {f}({a}, {b}, &{v});");
                }
            }
            Expr::Negate(inner) => {
                let (a, ka) = self.expr(inner)?;
                if inner.ty() == Ty::Float {
                    let _ = writeln!(self.code, "bool {k} = {ka}; double {v} = -{a};");
                } else {
                    let _ = writeln!(
                        self.code,
                        "bool {k} = {ka}; long long {v} = 0; if ({k}) bad |= sub_ck(0LL, {a}, &{v});"
                    );
                }
            }
            Expr::InList {
                expr: inner,
                list,
                negated,
            } => {
                let (a, ka) = self.expr(inner)?;
                let mut found = Vec::new();
                let mut saw_null = false;
                for item in list {
                    if *item == Lit::Null {
                        saw_null = true;
                        continue;
                    }
                    let (value, _) = self.literal(item, inner.ty())?;
                    found.push(format!("({a} == {value})"));
                }
                let found = if found.is_empty() {
                    "false".to_string()
                } else {
                    found.join(" || ")
                };
                let _ = writeln!(
                    self.code,
                    "bool f{v} = {found}; bool {k} = {ka} && (f{v} || !{saw_null}); bool {v} = {k} && (f{v} != {negated});"
                );
            }
            Expr::Cast {
                expr: inner,
                ty: to,
            } => {
                let from = inner.ty();
                let (a, ka) = self.expr(inner)?;
                match to {
                    Ty::Float => {
                        let divisor = 10f64.powi(from.scale() as i32);
                        let _ = writeln!(
                            self.code,
                            "bool {k} = {ka}; double {v} = (double){a} / {divisor:?};"
                        );
                    }
                    Ty::Decimal { scale, .. } => {
                        let scaled = self.rescale(&a, scale - from.scale());
                        let _ = writeln!(self.code, "bool {k} = {ka}; long long {v} = {scaled};");
                    }
                    _ => {
                        let _ = writeln!(self.code, "bool {k} = {ka}; {ty} {v} = ({ty}){a};");
                    }
                }
            }
        }
        Ok((v, k))
    }

    /// `value * 10^by`, overflow checked; returns the name holding it.
    fn rescale(&mut self, value: &str, by: i8) -> String {
        if by <= 0 {
            return value.to_string();
        }
        let factor = 10i64.checked_pow(by as u32).unwrap_or(i64::MAX);
        self.next += 1;
        let name = format!("r{}", self.next);
        let _ = writeln!(
            self.code,
            "long long {name} = 0; bad |= mul_ck({value}, {factor}LL, &{name});"
        );
        name
    }
}
