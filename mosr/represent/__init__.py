"""The representation stage: where harmful, benign and over-refused prompts sit in the model's states.

=================================  ================================================================================
module                             what it holds
=================================  ================================================================================
:mod:`mosr.represent.probe`        linear probes per layer (:class:`~mosr.represent.probe.ProbeSet`)
:mod:`mosr.represent.lens`         the logit lens (:func:`~mosr.represent.lens.logit_lens`)
:mod:`mosr.represent.geometry`     centroid geometry and PCA projections
:mod:`mosr.represent.study`        the representation study behind ``mosr probe``
                                   (:func:`~mosr.represent.study.run_representation_study`)
=================================  ================================================================================
"""
