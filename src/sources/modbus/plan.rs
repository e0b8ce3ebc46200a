//! Modbus request planning: a profile's points -> the fewest read requests within its limits. Pure.
//!
//! Rules, per register table (coil, discrete, holding, input):
//!
//! * a request covers at most `max_registers_per_read` registers (holding, input;
//!   capped at the protocol's 125) or `max_bits_per_read` bits (coil, discrete; capped
//!   at 2000);
//! * between two points a gap of up to `max_gap_registers` addresses may be read and
//!   thrown away (in bit tables the gap counts bits);
//! * a request never touches a `never_read` range of its table;
//! * a point is read whole by exactly one request; points sharing a register (bit
//!   fields of one status word) are read once.
//!
//! **Why greedy is optimal.** Points sorted by address do not overlap (validation
//! guarantees it, bit fields of one register share the same span), so a request that
//! covers two points covers every point between them: a plan is a split of the sorted
//! points into consecutive runs. Whether a run can be one request (its span within the
//! limit, every gap within `max_gap_registers`, no `never_read` inside) is hereditary:
//! every shorter run inside a feasible run is feasible. For such a family, extending the
//! current run as long as it stays feasible gives the fewest runs (the usual exchange
//! argument: the greedy i-th run always ends at or after the optimal plan's i-th run).
//! `tests/modbus_codec.rs` checks this against an independent dynamic programme on
//! every shipped profile and on random ones.

use crate::config::model::{DataType, ModbusProfile, PollClass, RegisterKind};

/// The Modbus protocol limit of registers per read (functions 3 and 4).
pub const PROTOCOL_MAX_REGISTERS: u16 = 125;
/// The Modbus protocol limit of bits per read (functions 1 and 2).
pub const PROTOCOL_MAX_BITS: u16 = 2000;

/// One read request and the points it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Table read.
    pub register: RegisterKind,
    /// First address.
    pub start: u16,
    /// Registers (or bits) read, at least 1.
    pub count: u16,
    /// `(index into the profile's points, offset of the point's first register or bit
    /// in the response)`, in address order.
    pub points: Vec<(usize, u16)>,
}

impl ReadRequest {
    /// The read function code: 1 coils, 2 discrete inputs, 3 holding, 4 input registers.
    pub fn function_code(&self) -> u8 {
        match self.register {
            RegisterKind::Coil => 1,
            RegisterKind::Discrete => 2,
            RegisterKind::Holding => 3,
            RegisterKind::Input => 4,
        }
    }

    /// One past the last address read.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// Why a point cannot be planned. Validated profiles have none of these; the planner
/// reports instead of panicking so the poller can name the point once and read the rest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanProblem {
    /// The point is wider than one request may be.
    #[error("{width} registers do not fit in one read of at most {limit}")]
    TooWide {
        /// The point's width.
        width: u32,
        /// The profile's limit for its table.
        limit: u16,
    },
    /// The point lies (partly) inside a `never_read` range.
    #[error("inside a never_read range")]
    NeverRead,
    /// The type does not fit the table (`bool` outside coils and discrete inputs, or a
    /// register type in a bit table), or has no width.
    #[error("type {0} cannot be read from this table")]
    WrongTable(&'static str),
    /// Address plus width passes 65535.
    #[error("address and width pass 65535")]
    OutOfAddressSpace,
}

/// A point left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplanned {
    /// Index into the profile's points.
    pub point: usize,
    /// Why.
    pub problem: PlanProblem,
}

/// The requests of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Requests, by table (coil, discrete, holding, input... as `RegisterKind` orders
    /// them) then address.
    pub requests: Vec<ReadRequest>,
    /// Points that could not be planned (none for a validated profile).
    pub unplanned: Vec<Unplanned>,
}

/// One plan per poll class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassPlans {
    /// Status words.
    pub fast: Plan,
    /// Measurements.
    pub normal: Plan,
    /// Counters, strings.
    pub slow: Plan,
}

impl ClassPlans {
    /// The plan of a class.
    pub fn of(&self, class: PollClass) -> &Plan {
        match class {
            PollClass::Fast => &self.fast,
            PollClass::Normal => &self.normal,
            PollClass::Slow => &self.slow,
        }
    }
}

/// Plans each poll class separately.
pub fn plan_classes(profile: &ModbusProfile) -> ClassPlans {
    ClassPlans {
        fast: plan(profile, |c| c == PollClass::Fast),
        normal: plan(profile, |c| c == PollClass::Normal),
        slow: plan(profile, |c| c == PollClass::Slow),
    }
}

/// The effective per-request limit of a table: the profile's, capped by the protocol,
/// at least 1.
pub fn limit_of(profile: &ModbusProfile, register: RegisterKind) -> u16 {
    if register.is_bit_table() {
        profile.limits.max_bits_per_read.clamp(1, PROTOCOL_MAX_BITS)
    } else {
        profile
            .limits
            .max_registers_per_read
            .clamp(1, PROTOCOL_MAX_REGISTERS)
    }
}

/// Plans the points whose class `include` accepts into the fewest read requests.
pub fn plan(profile: &ModbusProfile, include: impl Fn(PollClass) -> bool) -> Plan {
    let mut out = Plan::default();
    // (table, first address, one past the last, point index)
    let mut spans: Vec<(RegisterKind, u32, u32, usize)> = Vec::new();
    for (index, point) in profile.points.iter().enumerate() {
        if !include(point.class) {
            continue;
        }
        let register = point.register;
        let width = point.data_type.width();
        let is_bool = point.data_type == DataType::Bool;
        let limit = limit_of(profile, register);
        let start = u32::from(point.address);
        let problem = if is_bool != register.is_bit_table() || width == 0 {
            Some(PlanProblem::WrongTable(point.data_type.as_str()))
        } else if width > u32::from(limit) {
            Some(PlanProblem::TooWide { width, limit })
        } else if start + width > 65536 {
            Some(PlanProblem::OutOfAddressSpace)
        } else if touches_never_read(profile, register, start, start + width) {
            Some(PlanProblem::NeverRead)
        } else {
            None
        };
        match problem {
            Some(problem) => out.unplanned.push(Unplanned {
                point: index,
                problem,
            }),
            None => spans.push((register, start, start + width, index)),
        }
    }
    spans.sort_unstable();

    let gap_limit = u32::from(profile.limits.max_gap_registers);
    let mut current: Option<Run> = None;
    for (register, start, end, index) in spans {
        if let Some(run) = current.as_mut() {
            let new_end = run.end.max(end);
            let fits = run.register == register
                && start.saturating_sub(run.end) <= gap_limit
                && new_end - run.start <= u32::from(limit_of(profile, register))
                && !touches_never_read(profile, register, run.start, new_end);
            if fits {
                run.end = new_end;
                run.points.push((index, start - run.start));
                continue;
            }
        }
        if let Some(run) = current.take() {
            out.requests.push(run.finish());
        }
        current = Some(Run {
            register,
            start,
            end,
            points: vec![(index, 0)],
        });
    }
    if let Some(run) = current {
        out.requests.push(run.finish());
    }
    out
}

/// A request being built. Addresses are `u32` so `end` can be 65536.
struct Run {
    register: RegisterKind,
    start: u32,
    end: u32,
    points: Vec<(usize, u32)>,
}

impl Run {
    fn finish(self) -> ReadRequest {
        // Invariants of `plan`: start <= 65535, end - start <= 2000 (the limits are
        // capped), offsets < end - start, so the narrowing casts are exact.
        ReadRequest {
            register: self.register,
            start: self.start as u16,
            count: (self.end - self.start) as u16,
            points: self
                .points
                .into_iter()
                .map(|(index, offset)| (index, offset as u16))
                .collect(),
        }
    }
}

/// True when `[start, end)` of `register` intersects a `never_read` range.
fn touches_never_read(
    profile: &ModbusProfile,
    register: RegisterKind,
    start: u32,
    end: u32,
) -> bool {
    profile
        .never_read
        .iter()
        .any(|r| r.overlaps(register, start, end - start))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::config::model::{
        ModbusPoint, PollIntervals, ReadLimits, RegisterRange, Role, Unit, WordOrder,
    };

    fn pt(register: RegisterKind, address: u16, data_type: DataType) -> ModbusPoint {
        ModbusPoint {
            name: format!("p{address}"),
            role: Role::UpsLoadPct,
            register,
            address,
            data_type,
            order: WordOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            unit: Unit::parse("").expect("the empty unit is in the list"),
            class: PollClass::Normal,
            enum_names: BTreeMap::new(),
            sentinels: Vec::new(),
            valid_min: None,
            valid_max: None,
        }
    }

    fn holding(address: u16, data_type: DataType) -> ModbusPoint {
        pt(RegisterKind::Holding, address, data_type)
    }

    fn profile(points: Vec<ModbusPoint>, regs: u16, bits: u16, gap: u16) -> ModbusProfile {
        ModbusProfile {
            limits: ReadLimits {
                max_registers_per_read: regs,
                max_bits_per_read: bits,
                max_gap_registers: gap,
            },
            never_read: Vec::new(),
            poll: PollIntervals {
                fast: Duration::from_secs(2),
                normal: Duration::from_secs(10),
                slow: Duration::from_secs(60),
            },
            points,
        }
    }

    fn all(p: &ModbusProfile) -> Plan {
        plan(p, |_| true)
    }

    /// (start, count) of each request.
    fn shape(plan: &Plan) -> Vec<(u16, u16)> {
        plan.requests.iter().map(|r| (r.start, r.count)).collect()
    }

    #[test]
    fn gaps_below_at_and_above_the_limit() {
        // u16 at 0, then a u16 after a gap of 7, 8 and 9 registers.
        for (gap, expected) in [
            (7, vec![(0, 9)]),
            (8, vec![(0, 10)]),
            (9, vec![(0, 1), (10, 1)]),
        ] {
            let p = profile(
                vec![holding(0, DataType::U16), holding(1 + gap, DataType::U16)],
                125,
                2000,
                8,
            );
            assert_eq!(shape(&all(&p)), expected, "gap {gap}");
        }
        // max_gap 0: only adjacent points merge.
        let p = profile(
            vec![
                holding(0, DataType::U32),
                holding(2, DataType::U16),
                holding(4, DataType::U16),
            ],
            125,
            2000,
            0,
        );
        assert_eq!(shape(&all(&p)), vec![(0, 3), (4, 1)]);
    }

    #[test]
    fn exactly_125_registers_is_one_read_126_is_two() {
        let f64s = |n: u16| {
            (0..n)
                .map(|i| holding(i * 4, DataType::F64))
                .collect::<Vec<_>>()
        };
        // 31 f64 = 124 registers, + one u16 at 124 = 125.
        let mut points = f64s(31);
        points.push(holding(124, DataType::U16));
        let p = profile(points.clone(), 125, 2000, 8);
        assert_eq!(shape(&all(&p)), vec![(0, 125)]);
        // The same + a u16 at 125 = 126 registers: two reads, the second at 125.
        points.push(holding(125, DataType::U16));
        let p = profile(points, 125, 2000, 8);
        let plan = all(&p);
        assert_eq!(shape(&plan), vec![(0, 125), (125, 1)]);
        assert_eq!(plan.requests[1].points, vec![(32, 0)]);
        // A profile limit above the protocol's is capped at 125.
        let wide = profile(f64s(40), 200, 2000, 8);
        assert!(all(&wide).requests.iter().all(|r| r.count <= 125));
        assert_eq!(shape(&all(&wide)), vec![(0, 124), (124, 36)]);
    }

    #[test]
    fn a_multi_register_point_is_never_split() {
        // Limit 10: u16 at 0, f64 at 7..11 would end at 11 > 10, so the f64 starts a read.
        let p = profile(
            vec![holding(0, DataType::U16), holding(7, DataType::F64)],
            10,
            2000,
            8,
        );
        let plan = all(&p);
        assert_eq!(shape(&plan), vec![(0, 1), (7, 4)]);
        assert_eq!(plan.requests[1].points, vec![(1, 0)]);
    }

    #[test]
    fn never_read_splits_a_run_even_within_the_gap() {
        let mut p = profile(
            vec![
                holding(0, DataType::U16),
                holding(4, DataType::U16),
                holding(8, DataType::U16),
            ],
            125,
            2000,
            8,
        );
        let merged = all(&p);
        assert_eq!(shape(&merged), vec![(0, 9)]);
        p.never_read = vec![RegisterRange {
            register: RegisterKind::Holding,
            start: 6,
            count: 1,
        }];
        assert_eq!(shape(&all(&p)), vec![(0, 5), (8, 1)]);
        // A never_read range of another table changes nothing.
        p.never_read[0].register = RegisterKind::Input;
        assert_eq!(all(&p), merged);
        // Right before and right after a point: still one read each side, touching none.
        p.never_read = vec![
            RegisterRange {
                register: RegisterKind::Holding,
                start: 1,
                count: 3,
            },
            RegisterRange {
                register: RegisterKind::Holding,
                start: 5,
                count: 3,
            },
        ];
        let plan = all(&p);
        assert_eq!(shape(&plan), vec![(0, 1), (4, 1), (8, 1)]);
    }

    #[test]
    fn coils_2000_bits_is_one_read_2001_is_two() {
        let coils = |n: u16| {
            (0..n)
                .map(|i| pt(RegisterKind::Coil, i, DataType::Bool))
                .collect::<Vec<_>>()
        };
        let p = profile(coils(2000), 125, 2000, 8);
        assert_eq!(shape(&all(&p)), vec![(0, 2000)]);
        let p = profile(coils(2001), 125, 2000, 8);
        let plan = all(&p);
        assert_eq!(shape(&plan), vec![(0, 2000), (2000, 1)]);
        assert_eq!(plan.requests[0].function_code(), 1);
        // A profile's lower bit limit holds too.
        let p = profile(coils(100), 125, 64, 8);
        assert_eq!(shape(&all(&p)), vec![(0, 64), (64, 36)]);
    }

    #[test]
    fn bit_fields_sharing_a_register_are_read_once() {
        let bit = |b: u8, count: u8| DataType::Bit { bit: b, count };
        let p = profile(
            vec![
                holding(774, bit(0, 1)),
                holding(774, bit(1, 1)),
                holding(2049, bit(12, 4)),
                holding(2049, bit(8, 4)),
                holding(2049, bit(4, 4)),
            ],
            125,
            2000,
            8,
        );
        let plan = all(&p);
        assert_eq!(shape(&plan), vec![(774, 1), (2049, 1)]);
        assert_eq!(plan.requests[0].points, vec![(0, 0), (1, 0)]);
        let mut second: Vec<usize> = plan.requests[1].points.iter().map(|(i, _)| *i).collect();
        second.sort_unstable();
        assert_eq!(second, vec![2, 3, 4]);
    }

    #[test]
    fn tables_and_classes_are_planned_apart() {
        let mut fast = holding(0, DataType::U16);
        fast.class = PollClass::Fast;
        let mut slow = holding(1, DataType::U32);
        slow.class = PollClass::Slow;
        let p = profile(
            vec![
                fast,
                slow,
                holding(3, DataType::U16),
                pt(RegisterKind::Input, 0, DataType::U16),
                pt(RegisterKind::Discrete, 0, DataType::Bool),
            ],
            125,
            2000,
            8,
        );
        let plans = plan_classes(&p);
        assert_eq!(shape(&plans.fast), vec![(0, 1)]);
        assert_eq!(shape(&plans.slow), vec![(1, 2)]);
        let codes: Vec<u8> = plans
            .normal
            .requests
            .iter()
            .map(|r| r.function_code())
            .collect();
        assert_eq!(
            codes,
            vec![3, 4, 2],
            "holding, input, discrete: one read each"
        );
        assert_eq!(
            shape(&all(&p)).len(),
            3,
            "all classes together: one read per table"
        );
    }

    #[test]
    fn impossible_points_are_reported_not_planned() {
        let mut p = profile(
            vec![
                holding(0, DataType::String { length: 126 }),
                holding(200, DataType::Bool),
                pt(RegisterKind::Coil, 0, DataType::U16),
                holding(65534, DataType::U64),
                holding(300, DataType::U16),
                holding(400, DataType::U16),
            ],
            125,
            2000,
            8,
        );
        p.never_read = vec![RegisterRange {
            register: RegisterKind::Holding,
            start: 300,
            count: 1,
        }];
        let plan = all(&p);
        assert_eq!(shape(&plan), vec![(400, 1)]);
        let problems: Vec<(usize, PlanProblem)> = plan
            .unplanned
            .into_iter()
            .map(|u| (u.point, u.problem))
            .collect();
        assert_eq!(
            problems,
            vec![
                (
                    0,
                    PlanProblem::TooWide {
                        width: 126,
                        limit: 125
                    }
                ),
                (1, PlanProblem::WrongTable("bool")),
                (2, PlanProblem::WrongTable("u16")),
                (3, PlanProblem::OutOfAddressSpace),
                (4, PlanProblem::NeverRead),
            ]
        );
    }

    #[test]
    fn the_last_address_is_reachable() {
        let p = profile(
            vec![holding(65533, DataType::U16), holding(65535, DataType::U16)],
            125,
            2000,
            8,
        );
        let plan = all(&p);
        assert_eq!(shape(&plan), vec![(65533, 3)]);
        assert_eq!(plan.requests[0].end(), 65536);
    }
}
