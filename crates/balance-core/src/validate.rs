//! Checks that config validation shares; each returns [`BalanceError::InvalidConfig`] naming the field.

use crate::error::{BalanceError, Result};

/// `Ok` when `holds`, else [`BalanceError::InvalidConfig`] for `field` = `value`, expecting `expected`.
fn require(holds: bool, method: &str, field: &str, value: f64, expected: &str) -> Result<()> {
    if holds {
        Ok(())
    } else {
        Err(BalanceError::invalid_config(method, field, value, expected))
    }
}

/// `value` must lie in `[0, 1)` (decays).
pub fn unit_interval_open(method: &str, field: &str, value: f64) -> Result<()> {
    require(
        (0.0..1.0).contains(&value),
        method,
        field,
        value,
        "a number in [0, 1)",
    )
}

/// `value` must be finite and `> 0` (learning rates, epsilons, temperatures).
pub fn positive(method: &str, field: &str, value: f64) -> Result<()> {
    require(
        value.is_finite() && value > 0.0,
        method,
        field,
        value,
        "a finite number > 0",
    )
}

/// `value` must be finite and `>= 0`.
pub fn non_negative(method: &str, field: &str, value: f64) -> Result<()> {
    require(
        value.is_finite() && value >= 0.0,
        method,
        field,
        value,
        "a finite number >= 0",
    )
}

/// A balancer needs at least `min` tasks.
pub fn task_count_at_least(method: &str, num_tasks: usize, min: usize) -> Result<()> {
    if num_tasks >= min {
        Ok(())
    } else {
        Err(BalanceError::invalid_config(
            method,
            "num_tasks",
            num_tasks,
            format!("at least {min} tasks"),
        ))
    }
}

/// One finite value `> 0` per task: given prior losses (the best constant predictor's loss per task).
pub fn prior_losses(method: &str, field: &str, values: &[f64], num_tasks: usize) -> Result<()> {
    if values.len() != num_tasks {
        return Err(BalanceError::invalid_config(
            method,
            field,
            format!("{values:?}"),
            format!("one value per task ({num_tasks}), got {}", values.len()),
        ));
    }
    for (i, &v) in values.iter().enumerate() {
        positive(method, &format!("{field}[{i}]"), v)?;
    }
    Ok(())
}

/// Per-task weights: one per task, each finite and `>= 0`, not all zero.
pub fn task_weights(method: &str, field: &str, weights: &[f64], num_tasks: usize) -> Result<()> {
    if weights.len() != num_tasks {
        return Err(BalanceError::invalid_config(
            method,
            field,
            format!("{weights:?}"),
            format!("one weight per task ({num_tasks}), got {}", weights.len()),
        ));
    }
    for (i, &w) in weights.iter().enumerate() {
        non_negative(method, &format!("{field}[{i}]"), w)?;
    }
    if weights.iter().all(|&w| w == 0.0) {
        return Err(BalanceError::invalid_config(
            method,
            field,
            format!("{weights:?}"),
            "at least one weight > 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_field_and_value() {
        let e = unit_interval_open("m", "decay", 1.0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid config for `m`: field `decay` = 1, expected a number in [0, 1)"
        );
        let e = positive("m", "lr", 0.0).unwrap_err().to_string();
        assert!(e.contains("field `lr` = 0"), "{e}");
        let e = non_negative("m", "eps", f64::NAN).unwrap_err().to_string();
        assert!(e.contains("field `eps` = NaN"), "{e}");
        let e = task_count_at_least("m", 1, 2).unwrap_err().to_string();
        assert!(
            e.contains("field `num_tasks` = 1, expected at least 2 tasks"),
            "{e}"
        );
        let e = task_weights("m", "weights", &[1.0], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one weight per task (2), got 1"), "{e}");
        let e = task_weights("m", "weights", &[1.0, -2.0], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `weights[1]` = -2"), "{e}");
        let e = task_weights("m", "weights", &[0.0, 0.0], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one weight > 0"), "{e}");
        assert!(task_weights("m", "weights", &[0.0, 2.0], 2).is_ok());
        assert!(unit_interval_open("m", "decay", 0.0).is_ok());
    }
}
