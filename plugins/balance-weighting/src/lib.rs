//! Loss-weighting balancers (work in progress): uncertainty, DWA, RLW, GLS, FAMO.
