"""Tests of the Kubernetes side (SPEC §10.6): the fake API server the provider is tested against,
cross-checked with the real kubectl, and the IngressRoute CRD."""
