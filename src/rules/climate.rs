//! Psychrometrics for the humidity rules: dew point from temperature and relative humidity.

/// Magnus coefficient `a` (Sonntag 1990, over water, -45..60 degC).
const MAGNUS_A: f64 = 17.62;
/// Magnus coefficient `b`, degC.
const MAGNUS_B: f64 = 243.12;

/// Dew point in degC from air temperature (degC) and relative humidity (%RH), by the
/// Magnus formula; `None` when the humidity is not in (0, 100] or the input is not finite.
///
/// Accuracy is better than 0.35 degC over -45..60 degC, ample for the data hall range.
pub fn dew_point_c(temperature_c: f64, humidity_pct: f64) -> Option<f64> {
    if !(temperature_c.is_finite() && humidity_pct > 0.0 && humidity_pct <= 100.0) {
        return None;
    }
    let gamma = (humidity_pct / 100.0).ln() + MAGNUS_A * temperature_c / (MAGNUS_B + temperature_c);
    let dp = MAGNUS_B * gamma / (MAGNUS_A - gamma);
    dp.is_finite().then_some(dp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let dp = dew_point_c(25.0, 50.0).unwrap();
        assert!((dp - 13.85).abs() < 0.05, "{dp}");
        // Saturated air: dew point equals the temperature.
        assert!((dew_point_c(20.0, 100.0).unwrap() - 20.0).abs() < 1e-9);
        // 27 degC / 60 %RH: about 18.6 degC (psychrometric tables).
        assert!((dew_point_c(27.0, 60.0).unwrap() - 18.6).abs() < 0.1);
        assert_eq!(dew_point_c(25.0, 0.0), None);
        assert_eq!(dew_point_c(25.0, 101.0), None);
        assert_eq!(dew_point_c(f64::NAN, 50.0), None);
    }
}
