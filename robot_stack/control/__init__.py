"""Control: IK (``ik``), safety filter (``safety``), trajectory sampling/blending (``trajectory``), executor."""
