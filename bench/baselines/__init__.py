"""The two baselines the bench measures our stack against, written the way their users write them."""
