"""The interpolation sweep: simplex grids and Pareto arithmetic, held-out evaluation of a policy,
the sweep stage and its report."""
