"""The reduction steps after integration: normalization, background subtraction, absolute scale."""
