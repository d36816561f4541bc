"""`benchmarks/provenance.py`: what the benchmark JSON files say about the machine."""

import os
import platform

from benchmarks import provenance

X86 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse4_2 avx avx2 avx512f avx512bw

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse4_2 avx avx2 avx512f avx512bw
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes crc32
CPU part\t: 0xd0c
"""


def test_machine_names_the_cpu_and_its_widest_vector_extension(tmp_path):
    cores = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    (tmp_path / "x86").write_text(X86)
    assert provenance.machine(tmp_path / "x86") == (
        f"{cores}, Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, avx512f"
    )
    (tmp_path / "x86_avx2").write_text(X86.replace(" avx512f avx512bw", ""))
    assert provenance.machine(tmp_path / "x86_avx2").endswith("GHz, avx2")
    (tmp_path / "arm").write_text(ARM)
    assert provenance.machine(tmp_path / "arm") == f"{cores}, 0xd0c, asimd"
    assert provenance.machine(tmp_path / "missing") == cores
