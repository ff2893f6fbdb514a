"""Train the stack's own demo policies from recorded episodes (torch, CPU) and export them to ONNX + manifest.

Two policies share one visuomotor trunk (:mod:`robot_stack.training.nets`): a CNN on the subsampled RGB and
base-frame XYZ images whose keypoint maps are turned, by a spatial softmax, into attended base-frame points;
these points, the TCP and the joint state feed an MLP. Heads:

* ``continuous`` — an ``ee_delta_xyz`` chunk (horizon, 3), served with ``action_head: continuous``;
* ``vq`` — token ids (n_tokens, levels) of a VQ action tokenizer trained on the recorded chunks
  (:mod:`robot_stack.training.vq_tokenizer`), served with ``action_head: latent_vq`` and decoded by
  :class:`robot_stack.decoders.vq.LatentVQDecoder`.

torch is imported only by the modules of this package (``pip install -e .[train]``); the serving path (ONNX
Runtime) never needs it. ``robot-stack train`` trains, ``robot-stack evaluate`` measures closed-loop success with
the real policy server.
"""
