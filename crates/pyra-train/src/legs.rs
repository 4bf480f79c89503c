//! The legs of a run: `legs.csv`, one row per invocation of `pyra train`, with the machine it
//! ran on and the wall and CPU time it spent, so that a run trained over many sessions and
//! machines can say what each validation score cost (PSNR per CPU hour).
//!
//! Columns: `leg,started_utc,machine,cores,first_step,last_step,wall_s,cpu_s,note`.
//! - `machine` is the CPU's model name and the instruction set Pyra's kernels chose
//!   ([`pyra_core::backend::cpu_model`]); `cores` the threads the OS offers this process.
//! - `cpu_s` is the training process's user + system time (`getrusage`, every thread), as
//!   `/usr/bin/time` reports it; empty where the platform cannot tell.
//! - The running leg's row is rewritten at every checkpoint, so a leg that is killed keeps
//!   the row of its last checkpoint: steps, wall and CPU up to there. Work lost by the kill is
//!   not counted (it is redone, and counted, by the next leg).
//! - Rows for legs run before the run kept this file may be written by hand; a `note` says
//!   where their numbers came from.
//!
//! On resume, rows of legs that began at or after the checkpoint's step are dropped (their
//! steps will be redone), as `log.csv` drops rows after it.

use std::path::{Path, PathBuf};

use pyra_core::fs::write_atomic;

pub const HEADER: &str = "leg,started_utc,machine,cores,first_step,last_step,wall_s,cpu_s,note";

/// One invocation of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    /// Its label ("1", "5b", ...): a number for legs this module appends.
    pub leg: String,
    pub started_utc: String,
    pub machine: String,
    pub cores: usize,
    pub first_step: u64,
    pub last_step: u64,
    pub wall_s: f64,
    /// `None` where it is unknown.
    pub cpu_s: Option<f64>,
    pub note: String,
}

impl Leg {
    fn to_row(&self) -> String {
        let clean = |s: &str| s.replace([',', '\n'], ";");
        format!(
            "{},{},{},{},{},{},{:.1},{},{}",
            clean(&self.leg),
            clean(&self.started_utc),
            clean(&self.machine),
            self.cores,
            self.first_step,
            self.last_step,
            self.wall_s,
            self.cpu_s.map(|c| format!("{c:.1}")).unwrap_or_default(),
            clean(&self.note)
        )
    }

    fn parse(line: &str) -> Result<Self, String> {
        let fields: Vec<&str> = line.splitn(9, ',').collect();
        if fields.len() != 9 {
            return Err(format!("expected 9 fields: {line}"));
        }
        let number = |i: usize, what: &str| -> Result<f64, String> {
            fields[i]
                .trim()
                .parse()
                .map_err(|_| format!("{what} `{}` is not a number", fields[i]))
        };
        Ok(Self {
            leg: fields[0].to_string(),
            started_utc: fields[1].to_string(),
            machine: fields[2].to_string(),
            cores: number(3, "cores")? as usize,
            first_step: number(4, "first_step")? as u64,
            last_step: number(5, "last_step")? as u64,
            wall_s: number(6, "wall_s")?,
            cpu_s: if fields[7].trim().is_empty() {
                None
            } else {
                Some(number(7, "cpu_s")?)
            },
            note: fields[8].to_string(),
        })
    }
}

/// `legs.csv` of a run folder.
#[derive(Debug, Clone)]
pub struct Legs {
    path: PathBuf,
    pub rows: Vec<Leg>,
}

impl Legs {
    /// Read `dir/legs.csv` (absent: no legs).
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join("legs.csv");
        let mut rows = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
                rows.push(Leg::parse(line).map_err(|e| format!("{}: {e}", path.display()))?);
            }
        }
        Ok(Self { path, rows })
    }

    /// Begin a leg at `first_step`: drop the legs that began at or after it and append this
    /// one, numbered after the last numbered leg.
    pub fn begin(dir: &Path, first_step: u64) -> Result<Self, String> {
        let mut legs = Self::read(dir)?;
        legs.rows.retain(|leg| leg.first_step < first_step);
        let reached = legs.rows.last().map_or(0, |leg| leg.last_step);
        let note = if reached < first_step {
            format!("steps {reached} -> {first_step} are in no recorded leg")
        } else {
            String::new()
        };
        let number = legs
            .rows
            .iter()
            .filter_map(|leg| {
                let digits: String = leg.leg.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0)
            + 1;
        legs.rows.push(Leg {
            leg: number.to_string(),
            started_utc: now_utc(),
            machine: pyra_core::backend::cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            first_step,
            last_step: first_step,
            wall_s: 0.0,
            cpu_s: Some(0.0),
            note,
        });
        Ok(legs)
    }

    /// Record the current leg's progress in memory only (the file keeps the last
    /// checkpoint's).
    pub fn progress(&mut self, last_step: u64, wall_s: f64, cpu_s: Option<f64>) {
        if let Some(leg) = self.rows.last_mut() {
            leg.last_step = last_step;
            leg.wall_s = wall_s;
            leg.cpu_s = cpu_s;
        }
    }

    /// Record the current leg's progress at a checkpoint and write the file.
    pub fn update(
        &mut self,
        last_step: u64,
        wall_s: f64,
        cpu_s: Option<f64>,
    ) -> Result<(), String> {
        self.progress(last_step, wall_s, cpu_s);
        self.write()
    }

    pub fn write(&self) -> Result<(), String> {
        let mut text = format!("{HEADER}\n");
        for leg in &self.rows {
            text.push_str(&leg.to_row());
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// CPU seconds spent to reach `step`: the legs before it in full, and the leg holding it
    /// pro rata of its steps. `None` where a leg on the way has no CPU time, or no leg
    /// reached `step`.
    pub fn cpu_s_at(&self, step: u64) -> Option<f64> {
        let mut spent = 0.0;
        let mut reached = 0;
        for leg in &self.rows {
            if step <= leg.first_step {
                break;
            }
            if leg.first_step != reached {
                // Steps no leg accounts for (legs.csv began mid-run, or a leg was lost).
                return None;
            }
            reached = leg.last_step;
            let cpu = leg.cpu_s?;
            if step <= leg.last_step {
                let share =
                    (step - leg.first_step) as f64 / (leg.last_step - leg.first_step) as f64;
                return Some(spent + cpu * share);
            }
            spent += cpu;
        }
        (step == 0).then_some(0.0)
    }

    /// Sums over all legs: steps, wall seconds, CPU seconds (`None` if any is unknown).
    pub fn totals(&self) -> (u64, f64, Option<f64>) {
        let steps = self.rows.iter().map(|l| l.last_step - l.first_step).sum();
        let wall = self.rows.iter().map(|l| l.wall_s).sum();
        let cpu = self.rows.iter().map(|l| l.cpu_s).sum();
        (steps, wall, cpu)
    }
}

/// One validation of a run and what it cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationCost {
    pub step: u64,
    pub psnr: f64,
    pub ssim: f64,
    /// CPU hours spent to reach `step`, `None` where [`Legs::cpu_s_at`] cannot tell.
    pub cpu_h: Option<f64>,
}

/// The validations of a run (`validation.csv`) with the CPU hours of `legs.csv`.
pub fn validation_costs(dir: &Path) -> Result<Vec<ValidationCost>, String> {
    let legs = Legs::read(dir)?;
    let path = dir.join("validation.csv");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let parsed = (|| {
            let step: u64 = fields.first()?.trim().parse().ok()?;
            let psnr: f64 = fields.get(1)?.trim().parse().ok()?;
            let ssim: f64 = fields.get(2)?.trim().parse().ok()?;
            Some((step, psnr, ssim))
        })();
        let (step, psnr, ssim) =
            parsed.ok_or_else(|| format!("{}: bad row `{line}`", path.display()))?;
        rows.push(ValidationCost {
            step,
            psnr,
            ssim,
            cpu_h: legs.cpu_s_at(step).map(|s| s / 3600.0),
        });
    }
    Ok(rows)
}

/// User + system CPU seconds of this process so far, all threads (`getrusage(RUSAGE_SELF)`).
pub fn process_cpu_s() -> Option<f64> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes one `rusage` into the zeroed value it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return None;
        }
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

fn now_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(label: &str, first: u64, last: u64, cpu: Option<f64>) -> Leg {
        Leg {
            leg: label.into(),
            started_utc: "2026-12-01 10:00".into(),
            machine: "Some CPU, avx2".into(),
            cores: 2,
            first_step: first,
            last_step: last,
            wall_s: 10.0,
            cpu_s: cpu,
            note: "by hand, from /usr/bin/time".into(),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pyra-legs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn cpu_at_a_step_adds_the_legs_before_and_a_share_of_its_own() {
        let legs = Legs {
            path: PathBuf::new(),
            rows: vec![
                leg("1", 0, 100, Some(400.0)),
                leg("2", 100, 300, Some(1000.0)),
                leg("3", 300, 400, None),
            ],
        };
        assert_eq!(legs.cpu_s_at(0), Some(0.0));
        assert_eq!(legs.cpu_s_at(50), Some(200.0));
        assert_eq!(legs.cpu_s_at(100), Some(400.0));
        assert_eq!(legs.cpu_s_at(200), Some(900.0));
        assert_eq!(legs.cpu_s_at(300), Some(1400.0));
        assert_eq!(legs.cpu_s_at(350), None, "leg 3 has no CPU time");
        assert_eq!(legs.cpu_s_at(500), None, "no leg reached step 500");
        assert_eq!(legs.totals(), (400, 30.0, None));
        // A run whose legs.csv began mid-run cannot tell the CPU time of any step.
        let late = Legs {
            path: PathBuf::new(),
            rows: vec![leg("1", 100, 300, Some(1000.0))],
        };
        assert_eq!(late.cpu_s_at(200), None);
        assert_eq!(late.cpu_s_at(50), None);
    }

    #[test]
    fn a_leg_resumed_without_legs_csv_says_which_steps_no_leg_records() {
        let dir = scratch("late");
        let mut legs = Legs::begin(&dir, 500).unwrap();
        legs.update(600, 1.0, Some(2.0)).unwrap();
        let read = Legs::read(&dir).unwrap();
        assert_eq!(read.rows.len(), 1);
        assert_eq!(read.rows[0].note, "steps 0 -> 500 are in no recorded leg");
        assert_eq!(read.cpu_s_at(550), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_resumed_leg_drops_the_legs_it_redoes_and_numbers_after_hand_written_ones() {
        let dir = scratch("resume");
        Legs {
            path: dir.join("legs.csv"),
            rows: vec![
                leg("4", 0, 100, Some(400.0)),
                leg("5a", 100, 150, Some(200.0)),
                leg("6", 150, 200, Some(200.0)),
            ],
        }
        .write()
        .unwrap();
        // The checkpoint is at step 150: leg 6's steps will be redone.
        let mut legs = Legs::begin(&dir, 150).unwrap();
        legs.update(180, 12.5, Some(30.25)).unwrap();
        let read = Legs::read(&dir).unwrap();
        let labels: Vec<&str> = read.rows.iter().map(|l| l.leg.as_str()).collect();
        assert_eq!(labels, ["4", "5a", "6"]);
        let new = &read.rows[2];
        assert_eq!((new.first_step, new.last_step), (150, 180));
        assert_eq!((new.wall_s, new.cpu_s), (12.5, Some(30.2)));
        assert_eq!(read.rows[1].note, "by hand; from /usr/bin/time");
        assert_eq!(read.cpu_s_at(165), Some(600.0 + 15.1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The kernel's own account of this process's CPU time: utime + stime of
    /// /proc/self/stat (fields 14 and 15, in clock ticks of 1/100 s).
    fn proc_stat_cpu_s() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        // Fields after the command name, which is in parentheses: field 3 is fields[0].
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    }

    #[test]
    fn process_cpu_time_agrees_with_proc_stat() {
        // Busy work until the kernel has charged at least 0.3 s more to this process (on a
        // loaded machine that takes longer than 0.3 s of wall time).
        let before = proc_stat_cpu_s();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while proc_stat_cpu_s() < before + 0.3 && start.elapsed().as_secs() < 60 {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        let ours = process_cpu_s().expect("getrusage works on Linux");
        let theirs = proc_stat_cpu_s();
        assert!(
            theirs >= before + 0.3,
            "the busy loop did not get 0.3 s of CPU in 60 s"
        );
        assert!(ours >= 0.29, "0.3 s of busy work, getrusage says {ours} s");
        assert!(
            (ours - theirs).abs() < 0.05 + 0.05 * theirs,
            "getrusage {ours} s, /proc/self/stat {theirs} s"
        );
    }
}
