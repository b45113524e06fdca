//! Scalar semantics in LLVM IR: constants, the elementwise ops, casts and
//! storage conversions, exactly as the kernel-IR interpreter and the CPU
//! backend define them.
//!
//! Everything here is target-independent LLVM IR (no NVVM intrinsics), so
//! the same code runs on the host JIT ([`super::host`]) where tests check
//! it against the interpreter.
//!
//! The mapping, op by op:
//!
//! * floats: `add`/`sub`/`mul`/`div`/`sqrt` are the correctly rounded IEEE
//!   operations (no fast-math flags, so NVPTX emits `div.rn`/`sqrt.rn`
//!   and `.rn` multiplies that `ptxas` may not contract), except that a
//!   multiply-add written as one expression is one `fma`, by the CPU
//!   backend's rule ([`fused_operands`]); `rsqrt` is
//!   `1 / sqrt(x)` and `recip` is `1 / x`, two and one roundings as on the
//!   CPU; `max`/`min` are `llvm.maximum`/`llvm.minimum` (NaN wins, and
//!   `-0 < +0`), the interpreter's `nan_max`/`nan_min`; `exp`, `log`,
//!   `tanh`, `sigmoid` and `pow` are inline routines ([`super::math`]);
//! * `i32`: two's-complement wrap-around for `add`, `sub`, `mul`, `neg`
//!   and `abs` (`abs(i32::MIN)` is `i32::MIN`), signed `max`, `min` and
//!   comparisons;
//! * `bool` is `i1` in registers and one byte (0 or 1) in memory;
//! * casts follow `DType::round`: float to `i32` saturates and maps NaN to
//!   0 (`fptosi.sat`), anything to `bool` is `!= 0` (NaN is true), indices
//!   (`i64`) saturate to `i32`;
//! * `bf16` widens exactly on load and rounds to nearest-even on store with
//!   the integer trick the CPU backend uses (NaN stays NaN, quieted), so
//!   both backends store identical bits.

use birkhoff_ir::kernel::{Expr, ScalarType};
use birkhoff_ir::{DType, Op};
use inkwell::FloatPredicate;
use inkwell::IntPredicate;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::{BasicType, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, BasicValueEnum, FloatValue, IntValue};

use super::math;
use crate::{GpuError, Result};

/// The operands of `op(lhs, rhs)` (of type `t`) when code generation fuses
/// it into one `fma` (see [`birkhoff_ir::kernel::contraction`]): floats
/// only, the CPU backend's rule, so that both round alike.
pub(crate) fn fused_operands<'e>(
    op: &Op,
    t: ScalarType,
    lhs: &'e Expr,
    rhs: &'e Expr,
) -> Option<(&'e Expr, &'e Expr, &'e Expr, bool)> {
    if matches!(t, ScalarType::F32 | ScalarType::F64) {
        birkhoff_ir::kernel::contraction(op, lhs, rhs)
    } else {
        None
    }
}

/// Turns an LLVM-side error into [`GpuError::Llvm`].
pub(crate) trait OrLlvm<T> {
    /// The value, or the error as [`GpuError::Llvm`].
    fn ll(self) -> Result<T>;
}

impl<T, E: std::fmt::Display> OrLlvm<T> for std::result::Result<T, E> {
    fn ll(self) -> Result<T> {
        self.map_err(|e| GpuError::Llvm(e.to_string()))
    }
}

/// A builder positioned somewhere in a module: what every emitter needs.
pub(crate) struct Cx<'m, 'ctx> {
    /// The LLVM context.
    pub ctx: &'ctx Context,
    /// The module being built.
    pub module: &'m Module<'ctx>,
    /// The instruction builder.
    pub b: Builder<'ctx>,
}

impl<'m, 'ctx> Cx<'m, 'ctx> {
    /// A new builder over `module` (not positioned yet).
    pub fn new(ctx: &'ctx Context, module: &'m Module<'ctx>) -> Self {
        Cx {
            ctx,
            module,
            b: ctx.create_builder(),
        }
    }

    /// The register type of a scalar type.
    pub fn ty(&self, t: ScalarType) -> BasicTypeEnum<'ctx> {
        match t {
            ScalarType::F32 => self.ctx.f32_type().into(),
            ScalarType::F64 => self.ctx.f64_type().into(),
            ScalarType::I32 => self.ctx.i32_type().into(),
            ScalarType::Bool => self.ctx.bool_type().into(),
            ScalarType::Index => self.ctx.i64_type().into(),
        }
    }

    /// The memory type of a buffer element stored as `d`.
    pub fn storage_ty(&self, d: DType) -> BasicTypeEnum<'ctx> {
        match d {
            DType::F32 => self.ctx.f32_type().into(),
            DType::F64 => self.ctx.f64_type().into(),
            DType::I32 => self.ctx.i32_type().into(),
            DType::Bf16 => self.ctx.i16_type().into(),
            DType::Bool => self.ctx.i8_type().into(),
        }
    }

    /// The memory type of a scratch-array element of type `t`.
    pub fn local_ty(&self, t: ScalarType) -> BasicTypeEnum<'ctx> {
        match t {
            ScalarType::Bool => self.ctx.i8_type().into(),
            _ => self.ty(t),
        }
    }

    /// An `f32` constant.
    pub fn f32c(&self, v: f32) -> FloatValue<'ctx> {
        self.ctx.f32_type().const_float(f64::from(v))
    }

    /// An `f64` constant.
    pub fn f64c(&self, v: f64) -> FloatValue<'ctx> {
        self.ctx.f64_type().const_float(v)
    }

    /// An `i32` constant.
    pub fn i32c(&self, v: i32) -> IntValue<'ctx> {
        self.ctx.i32_type().const_int(v as u32 as u64, false)
    }

    /// An `i64` constant.
    pub fn i64c(&self, v: i64) -> IntValue<'ctx> {
        self.ctx.i64_type().const_int(v as u64, false)
    }

    /// A float constant of the same type as `like`.
    pub fn fconst_like(&self, like: FloatValue<'ctx>, v: f64) -> FloatValue<'ctx> {
        like.get_type().const_float(v)
    }

    /// A constant of scalar type `t` (exact for every type, as in the IR).
    pub fn konst(&self, t: ScalarType, value: f64) -> BasicValueEnum<'ctx> {
        match t {
            ScalarType::F32 => self.f32c(value as f32).into(),
            ScalarType::F64 => self.f64c(value).into(),
            ScalarType::I32 => self.i32c(value as i32).into(),
            ScalarType::Index => self.i64c(value as i64).into(),
            ScalarType::Bool => self
                .ctx
                .bool_type()
                .const_int(u64::from(value != 0.0), false)
                .into(),
        }
    }

    /// Calls the overloaded intrinsic `name` on `args`; `tys` are its
    /// overload types.
    pub fn intrinsic(
        &self,
        name: &str,
        tys: &[BasicTypeEnum<'ctx>],
        args: &[BasicValueEnum<'ctx>],
    ) -> Result<BasicValueEnum<'ctx>> {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, tys))
            .ok_or_else(|| GpuError::Llvm(format!("no intrinsic {name}")))?;
        let args: Vec<BasicMetadataValueEnum<'ctx>> = args.iter().map(|&a| a.into()).collect();
        let call = self.b.build_call(f, &args, "").ll()?;
        call.try_as_basic_value()
            .basic()
            .ok_or_else(|| GpuError::Llvm(format!("{name} returns nothing")))
    }

    /// Calls an intrinsic without overloads that returns nothing.
    pub fn intrinsic_void(&self, name: &str, args: &[BasicValueEnum<'ctx>]) -> Result<()> {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[]))
            .ok_or_else(|| GpuError::Llvm(format!("no intrinsic {name}")))?;
        let args: Vec<BasicMetadataValueEnum<'ctx>> = args.iter().map(|&a| a.into()).collect();
        self.b.build_call(f, &args, "").ll()?;
        Ok(())
    }

    /// A float intrinsic with one overload type (`llvm.sqrt`, `llvm.fma`, ...).
    pub fn fcall(&self, name: &str, args: &[FloatValue<'ctx>]) -> Result<FloatValue<'ctx>> {
        let ty = args[0].get_type().as_basic_type_enum();
        let args: Vec<BasicValueEnum<'ctx>> = args.iter().map(|&a| a.into()).collect();
        Ok(self.intrinsic(name, &[ty], &args)?.into_float_value())
    }

    /// `a * b + c` with one rounding.
    pub fn fma(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
        c: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>> {
        self.fcall("llvm.fma", &[a, b, c])
    }

    /// `cond ? a : b`.
    pub fn select<V: Into<BasicValueEnum<'ctx>>>(
        &self,
        cond: IntValue<'ctx>,
        a: V,
        b: V,
    ) -> Result<BasicValueEnum<'ctx>> {
        let (a, b): (BasicValueEnum<'ctx>, BasicValueEnum<'ctx>) = (a.into(), b.into());
        self.b.build_select(cond, a, b, "").ll()
    }

    /// `cond ? a : b` on floats.
    pub fn fselect(
        &self,
        cond: IntValue<'ctx>,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>> {
        Ok(self.select(cond, a, b)?.into_float_value())
    }

    /// `cond ? a : b` on integers.
    pub fn iselect(
        &self,
        cond: IntValue<'ctx>,
        a: IntValue<'ctx>,
        b: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>> {
        Ok(self.select(cond, a, b)?.into_int_value())
    }

    /// A float comparison.
    pub fn fcmp(
        &self,
        p: FloatPredicate,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<IntValue<'ctx>> {
        self.b.build_float_compare(p, a, b, "").ll()
    }

    /// An integer comparison.
    pub fn icmp(
        &self,
        p: IntPredicate,
        a: IntValue<'ctx>,
        b: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>> {
        self.b.build_int_compare(p, a, b, "").ll()
    }

    /// `a + b`.
    pub fn fadd(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        self.b.build_float_add(a, b, "").ll()
    }

    /// `a - b`.
    pub fn fsub(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        self.b.build_float_sub(a, b, "").ll()
    }

    /// `-a` (the sign flipped, exactly).
    pub fn fneg(&self, a: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        self.b.build_float_neg(a, "").ll()
    }

    /// `a * b`.
    pub fn fmul(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        self.b.build_float_mul(a, b, "").ll()
    }

    /// `a / b`.
    pub fn fdiv(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        self.b.build_float_div(a, b, "").ll()
    }

    /// `|x|`.
    pub fn fabs(&self, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        self.fcall("llvm.fabs", &[x])
    }

    /// Bit-casts a value to `ty`.
    pub fn bitcast<T: BasicType<'ctx>>(
        &self,
        v: impl Into<BasicValueEnum<'ctx>>,
        ty: T,
    ) -> Result<BasicValueEnum<'ctx>> {
        let v: BasicValueEnum<'ctx> = v.into();
        self.b.build_bit_cast(v, ty, "").ll()
    }

    /// A unary op on a value of type `t`.
    pub fn unary(
        &self,
        op: &Op,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>> {
        let float = matches!(t, ScalarType::F32 | ScalarType::F64);
        if float {
            let x = x.into_float_value();
            let one = self.fconst_like(x, 1.0);
            let r = match op {
                Op::Neg => self.b.build_float_neg(x, "").ll()?,
                Op::Abs => self.fabs(x)?,
                Op::Sqrt => self.fcall("llvm.sqrt", &[x])?,
                Op::Rsqrt => {
                    let s = self.fcall("llvm.sqrt", &[x])?;
                    self.fdiv(one, s)?
                }
                Op::Recip => self.fdiv(one, x)?,
                Op::Exp => math::call(self, math::Routine::exp(t), &[x])?,
                Op::Log => math::call(self, math::Routine::log(t), &[x])?,
                Op::Tanh => math::call(self, math::Routine::tanh(t), &[x])?,
                Op::Sigmoid => math::call(self, math::Routine::sigmoid(t), &[x])?,
                _ => return Err(not_defined(op, t)),
            };
            return Ok(r.into());
        }
        let x = x.into_int_value();
        let r = match (op, t) {
            (Op::Neg, ScalarType::I32) => self.b.build_int_neg(x, "").ll()?,
            (Op::Abs, ScalarType::I32) => {
                let no_poison = self.ctx.bool_type().const_zero();
                self.intrinsic(
                    "llvm.abs",
                    &[self.ctx.i32_type().into()],
                    &[x.into(), no_poison.into()],
                )?
                .into_int_value()
            }
            (Op::Not, ScalarType::Bool) => self
                .b
                .build_xor(x, self.ctx.bool_type().const_int(1, false), "")
                .ll()?,
            _ => return Err(not_defined(op, t)),
        };
        Ok(r.into())
    }

    /// A binary op on operands of type `t`.
    pub fn binary(
        &self,
        op: &Op,
        t: ScalarType,
        a: BasicValueEnum<'ctx>,
        b: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>> {
        if matches!(t, ScalarType::F32 | ScalarType::F64) {
            let (a, b) = (a.into_float_value(), b.into_float_value());
            let pred = |p| -> Result<BasicValueEnum<'ctx>> { Ok(self.fcmp(p, a, b)?.into()) };
            return Ok(match op {
                Op::Add => self.fadd(a, b)?.into(),
                Op::Sub => self.fsub(a, b)?.into(),
                Op::Mul => self.fmul(a, b)?.into(),
                Op::Div => self.fdiv(a, b)?.into(),
                Op::Max => self.fcall("llvm.maximum", &[a, b])?.into(),
                Op::Min => self.fcall("llvm.minimum", &[a, b])?.into(),
                Op::Pow => math::call(self, math::Routine::pow(t), &[a, b])?.into(),
                Op::Eq => pred(FloatPredicate::OEQ)?,
                // `a != b` is true when either is NaN.
                Op::Ne => pred(FloatPredicate::UNE)?,
                Op::Lt => pred(FloatPredicate::OLT)?,
                Op::Le => pred(FloatPredicate::OLE)?,
                Op::Gt => pred(FloatPredicate::OGT)?,
                Op::Ge => pred(FloatPredicate::OGE)?,
                _ => return Err(not_defined(op, t)),
            });
        }
        let (a, b) = (a.into_int_value(), b.into_int_value());
        let pred = |p| -> Result<BasicValueEnum<'ctx>> { Ok(self.icmp(p, a, b)?.into()) };
        let ity = a.get_type().as_basic_type_enum();
        Ok(match (op, t) {
            (Op::Add, ScalarType::I32) => self.b.build_int_add(a, b, "").ll()?.into(),
            (Op::Sub, ScalarType::I32) => self.b.build_int_sub(a, b, "").ll()?.into(),
            (Op::Mul, ScalarType::I32) => self.b.build_int_mul(a, b, "").ll()?.into(),
            (Op::Max, ScalarType::I32) => {
                self.intrinsic("llvm.smax", &[ity], &[a.into(), b.into()])?
            }
            (Op::Min, ScalarType::I32) => {
                self.intrinsic("llvm.smin", &[ity], &[a.into(), b.into()])?
            }
            (Op::And, ScalarType::Bool) => self.b.build_and(a, b, "").ll()?.into(),
            (Op::Or, ScalarType::Bool) => self.b.build_or(a, b, "").ll()?.into(),
            (Op::Eq, _) => pred(IntPredicate::EQ)?,
            (Op::Ne, _) => pred(IntPredicate::NE)?,
            (Op::Lt, ScalarType::I32) => pred(IntPredicate::SLT)?,
            (Op::Le, ScalarType::I32) => pred(IntPredicate::SLE)?,
            (Op::Gt, ScalarType::I32) => pred(IntPredicate::SGT)?,
            (Op::Ge, ScalarType::I32) => pred(IntPredicate::SGE)?,
            _ => return Err(not_defined(op, t)),
        })
    }

    /// Converts `x` from `from` to `to` as `DType::round` does.
    pub fn cast(
        &self,
        from: ScalarType,
        to: ScalarType,
        x: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>> {
        use ScalarType as S;
        if from == to {
            return Ok(x);
        }
        let b = &self.b;
        let r: BasicValueEnum<'ctx> = match (from, to) {
            (S::F32, S::F64) => b
                .build_float_ext(x.into_float_value(), self.ctx.f64_type(), "")
                .ll()?
                .into(),
            (S::F64, S::F32) => b
                .build_float_trunc(x.into_float_value(), self.ctx.f32_type(), "")
                .ll()?
                .into(),
            // `x as i32`: saturating, NaN to 0.
            (S::F32 | S::F64, S::I32) => self.intrinsic(
                "llvm.fptosi.sat",
                &[self.ctx.i32_type().into(), self.ty(from)],
                &[x],
            )?,
            (S::I32 | S::Index, S::F32 | S::F64) => b
                .build_signed_int_to_float(x.into_int_value(), self.ty(to).into_float_type(), "")
                .ll()?
                .into(),
            (S::Bool, S::F32 | S::F64) => b
                .build_unsigned_int_to_float(x.into_int_value(), self.ty(to).into_float_type(), "")
                .ll()?
                .into(),
            (S::Bool, S::I32) => b
                .build_int_z_extend(x.into_int_value(), self.ctx.i32_type(), "")
                .ll()?
                .into(),
            // `x != 0`: NaN is true.
            (S::F32 | S::F64, S::Bool) => {
                let x = x.into_float_value();
                self.fcmp(FloatPredicate::UNE, x, self.fconst_like(x, 0.0))?
                    .into()
            }
            (S::I32 | S::Index, S::Bool) => {
                let x = x.into_int_value();
                self.icmp(IntPredicate::NE, x, x.get_type().const_zero())?
                    .into()
            }
            // `x as i32` saturates; indices are never negative.
            (S::Index, S::I32) => {
                let x = x.into_int_value();
                let m = self.intrinsic(
                    "llvm.smin",
                    &[self.ctx.i64_type().into()],
                    &[x.into(), self.i64c(i64::from(i32::MAX)).into()],
                )?;
                b.build_int_truncate(m.into_int_value(), self.ctx.i32_type(), "")
                    .ll()?
                    .into()
            }
            _ => {
                return Err(GpuError::Llvm(format!(
                    "cast from {} to {}",
                    from.name(),
                    to.name()
                )));
            }
        };
        Ok(r)
    }

    /// Rounds an `f32` to bf16 bits (nearest, ties to even; NaN quieted),
    /// as `i16`.
    pub fn bf16_bits(&self, x: FloatValue<'ctx>) -> Result<IntValue<'ctx>> {
        let i32t = self.ctx.i32_type();
        let b = &self.b;
        let u = self.bitcast(x, i32t)?.into_int_value();
        let hi = b.build_right_shift(u, self.i32c(16), false, "").ll()?;
        let odd = b.build_and(hi, self.i32c(1), "").ll()?;
        let r = b.build_int_add(u, self.i32c(0x7fff), "").ll()?;
        let r = b.build_int_add(r, odd, "").ll()?;
        let rounded = b.build_right_shift(r, self.i32c(16), false, "").ll()?;
        let nan_bits = b.build_or(hi, self.i32c(0x40), "").ll()?;
        let is_nan = self.fcmp(FloatPredicate::UNO, x, x)?;
        let bits = self.iselect(is_nan, nan_bits, rounded)?;
        b.build_int_truncate(bits, self.ctx.i16_type(), "").ll()
    }

    /// Widens bf16 bits (`i16`) to the `f32` they encode (exact).
    pub fn bf16_widen(&self, bits: IntValue<'ctx>) -> Result<FloatValue<'ctx>> {
        let w = self
            .b
            .build_int_z_extend(bits, self.ctx.i32_type(), "")
            .ll()?;
        let w = self.b.build_left_shift(w, self.i32c(16), "").ll()?;
        Ok(self.bitcast(w, self.ctx.f32_type())?.into_float_value())
    }

    /// A compute value of a buffer element's type, converted to its
    /// storage form (`bf16` rounded, `bool` as a byte).
    pub fn to_storage(&self, d: DType, x: BasicValueEnum<'ctx>) -> Result<BasicValueEnum<'ctx>> {
        Ok(match d {
            DType::Bf16 => self.bf16_bits(x.into_float_value())?.into(),
            DType::Bool => self
                .b
                .build_int_z_extend(x.into_int_value(), self.ctx.i8_type(), "")
                .ll()?
                .into(),
            _ => x,
        })
    }

    /// A stored element, widened to its compute type.
    pub fn value_of_stored(
        &self,
        d: DType,
        x: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>> {
        Ok(match d {
            DType::Bf16 => self.bf16_widen(x.into_int_value())?.into(),
            DType::Bool => {
                let x = x.into_int_value();
                self.icmp(IntPredicate::NE, x, x.get_type().const_zero())?
                    .into()
            }
            _ => x,
        })
    }

    /// A local element as stored (`bool` as a byte) from its value.
    pub fn to_local(&self, t: ScalarType, x: BasicValueEnum<'ctx>) -> Result<BasicValueEnum<'ctx>> {
        match t {
            ScalarType::Bool => self.to_storage(DType::Bool, x),
            _ => Ok(x),
        }
    }

    /// A local element's value from its stored form.
    pub fn value_of_local(
        &self,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>> {
        match t {
            ScalarType::Bool => self.value_of_stored(DType::Bool, x),
            _ => Ok(x),
        }
    }
}

fn not_defined(op: &Op, t: ScalarType) -> GpuError {
    GpuError::Llvm(format!("{} is not defined on {}", op.mnemonic(), t.name()))
}
