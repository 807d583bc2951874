def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a slow test (e.g. compiles brian2's cython target)")
