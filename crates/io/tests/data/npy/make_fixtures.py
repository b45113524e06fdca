"""Writes the .npy fixtures in this directory with NumPy.

Run from anywhere: `python3 make_fixtures.py`. The outputs are committed,
so the tests do not need Python; rerun only to add or change a fixture, and
update tests/npy.rs to match.
"""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, array, version=None):
    path = os.path.join(HERE, name)
    if version is None:
        np.save(path, array)
    else:
        with open(path, "wb") as f:
            np.lib.format.write_array(f, array, version=version)


# Supported dtypes, C order, little-endian (np.save's output is compared
# byte for byte with ours).
save("f4_2x3.npy", np.array([[0.0, -1.5, 0.1], [3.0e38, -0.0, np.inf]], dtype="<f4"))
save("f8_4.npy", np.array([0.1, -2.0, 1e300, np.nan], dtype="<f8"))
save("i4_2x2.npy", np.array([[-(2**31), -1], [0, 2**31 - 1]], dtype="<i4"))
save("bool_5.npy", np.array([True, False, False, True, True]))
# bf16 bit patterns of 1.0, -2.0, inf and the smallest subnormal.
save("bf16_bits_4.npy", np.array([0x3F80, 0xC000, 0x7F80, 0x0001], dtype="<u2"))
save("f4_1x2x1x3.npy", np.arange(6, dtype="<f4").reshape(1, 2, 1, 3) - 2.5)
save("scalar_f8.npy", np.array(3.5))
save("scalar_i4.npy", np.array(-7, dtype="<i4"))

# Big-endian.
save("f4_be_2x2.npy", np.array([[1.0, -2.0], [0.5, 3.25]], dtype=">f4"))
save("f8_be_2.npy", np.array([0.1, -3.5], dtype=">f8"))
save("i4_be_3.npy", np.array([1, -2, 65536], dtype=">i4"))
save("bf16_bits_be_2.npy", np.array([0x3F80, 0xC000], dtype=">u2"))

# Fortran order: in row-major order the values count up 0, 1, 2, ...; on
# disk they are stored first index fastest (0, 3, 1, 4, 2, 5 for 2x3), so a
# reader that ignores the order gets a visibly different array.
save("fortran_f4_2x3.npy", np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
save("fortran_i4_2x3x4.npy", np.asfortranarray(np.arange(24, dtype="<i4").reshape(2, 3, 4)))
save("fortran_bool_2x2.npy", np.asfortranarray(np.array([[True, True], [False, True]])))

# Other format versions.
save("v2_f4_3.npy", np.array([1.0, 2.0, 3.0], dtype="<f4"), version=(2, 0))
save("v3_f4_3.npy", np.array([1.0, 2.0, 3.0], dtype="<f4"), version=(3, 0))

# Rejected: unsupported dtypes and empty arrays.
save("c8.npy", np.array([1 + 2j], dtype="<c8"))
save("U3.npy", np.array(["abc", "de"], dtype="<U3"))
save("i8.npy", np.arange(3, dtype="<i8"))
save("f2.npy", np.array([1.0], dtype="<f2"))
save("structured.npy", np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")]))
save("object.npy", np.array([None, 1], dtype=object))
save("empty_0x3.npy", np.zeros((0, 3), dtype="<f4"))
