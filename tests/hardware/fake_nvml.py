"""A fake `pynvml` module for tests: GPUs described by dicts, readings scripted as lists.

Install it with ``monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([...]))``. Each GPU dict may hold:
name, uuid, bus_id (NVML's order is the list's: index = position), memory, sm_clock, sm_clock_max,
mem_clock, power_mw, temperature, reasons, energy_mj, power_limit_mw, mig_mode (current, pending),
parent (the GPU dict a MIG slice belongs to). A list value is read one element per call (the last one
repeats), a missing key raises NVMLError (NOT_SUPPORTED), as NVML does for a reading a GPU lacks.
``delay_s`` makes every reading that slow (a busy driver: an NVML call can take milliseconds).
"""

import time
import types
from types import SimpleNamespace


class NVMLError(Exception):
    pass


class FakeNvml(types.ModuleType):
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    NVMLError = NVMLError

    def __init__(self, gpus, driver="570.86.15", cuda=12080, delay_s=0.0):
        super().__init__("pynvml")
        self.gpus, self.driver, self.cuda, self.delay_s = gpus, driver, cuda, delay_s
        self.calls: list[str] = []
        self.reads: dict[tuple[int, str], int] = {}

    # --- scripted readings
    def _read(self, gpu, key):
        if self.delay_s:
            time.sleep(self.delay_s)
        if key not in gpu:
            raise NVMLError("NVML_ERROR_NOT_SUPPORTED")
        value = gpu[key]
        if isinstance(value, list):
            n = self.reads.get((id(gpu), key), 0)
            self.reads[(id(gpu), key)] = n + 1
            self.calls.append(key)
            return value[min(n, len(value) - 1)]
        return value

    # --- library
    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return self.driver.encode()

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return self.cuda

    # --- finding a device
    def nvmlDeviceGetHandleByIndex(self, index):
        self.calls.append(f"by_index:{index}")
        gpus = [g for g in self.gpus if "parent" not in g]
        if index >= len(gpus):
            raise NVMLError("NVML_ERROR_INVALID_ARGUMENT")
        return gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for gpu in self.gpus:
            if gpu.get("uuid") == uuid:
                self.calls.append(f"by_uuid:{uuid}")
                return gpu
        raise NVMLError("NVML_ERROR_NOT_FOUND")

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id):
        for gpu in self.gpus:
            if gpu.get("bus_id", "").lower() == bus_id.lower():
                self.calls.append(f"by_bus:{bus_id}")
                return gpu
        raise NVMLError("NVML_ERROR_NOT_FOUND")

    def nvmlDeviceIsMigDeviceHandle(self, handle):
        return "parent" in handle

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return handle["parent"]

    def nvmlDeviceGetMigMode(self, handle):
        return self._read(handle, "mig_mode")

    # --- readings
    def nvmlDeviceGetName(self, handle):
        return handle["name"].encode()

    def nvmlDeviceGetUUID(self, handle):
        return self._read(handle, "uuid")

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=self._read(handle, "memory"), free=0, used=0)

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return self._read(handle, "sm_clock" if clock == self.NVML_CLOCK_SM else "mem_clock")

    def nvmlDeviceGetMaxClockInfo(self, handle, clock):
        return self._read(handle, "sm_clock_max")

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self._read(handle, "power_limit_mw")

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._read(handle, "power_mw")

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return self._read(handle, "temperature")

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self._read(handle, "reasons")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self._read(handle, "energy_mj")


def cuda_props(uuid=None, sms=132, memory=80 * 2**30, bus=None):
    """What `torch.cuda.get_device_properties(i)` answers, for the fields flopbench reads."""
    props = SimpleNamespace(uuid=uuid, multi_processor_count=sms, total_memory=memory)
    if bus is not None:
        props.pci_domain_id, props.pci_bus_id, props.pci_device_id = bus
    return props


def pretend_cuda(monkeypatch, props: list, names: list[str] | None = None):
    """torch.cuda as a process whose visible devices have `props` (CUDA_VISIBLE_DEVICES already applied)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(props))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props[i or 0])
    if names is not None:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: names[i or 0])
