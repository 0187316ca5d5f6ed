import torch

# The tests use tiny tensors, where a second thread only adds synchronisation;
# on a machine that is busy with a training campaign, two threads per test
# process made the learning tests dozens of times slower.
torch.set_num_threads(1)
