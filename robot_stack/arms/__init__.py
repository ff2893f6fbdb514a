"""Real arms behind the :class:`~robot_stack.robots.base.Robot` interface, through their vendors' own libraries.

========================  ================================  ==========================================================
adapter                   library (imported lazily)         command mode, rate
========================  ================================  ==========================================================
:mod:`.ur_rtde`           ``ur-rtde`` (``rtde_control``,    ``servoJ`` joint set-points at the controller's cycle (CB3
                          ``rtde_receive``)                 125 Hz, e-Series 500 Hz), lookahead 0.1 s, gain 300
:mod:`.franka`            ``pylibfranka``                   joint-position control (joint impedance) in libfranka's
                                                            1 kHz loop, our set-points interpolated into it
:mod:`.so_follower`       ``lerobot`` (SO-100/101 follower  ``Goal_Position`` of the STS3215 servos over the Feetech
                          classes)                          bus, 100 Hz; degrees and 0..100 gripper converted
========================  ================================  ==========================================================

Each adapter takes its arm's description (:mod:`robot_stack.robots`): joint names, limits (every command is
validated against them and refused, never clamped), TCP. Each has a ``connect(**options)`` factory for
``robot: {kind: factory, factory: robot_stack.arms.<module>:connect, options: {...}}``. Without the arm, their tests
exercise the real libraries as far as they go (connection errors) and fakes at the library boundary for the rest;
tests that need an arm are marked ``hardware``.
"""
