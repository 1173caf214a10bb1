"""The attribution of a step's time to classes of work, and the waterfall from the peak to MFU, on fixed inputs:
real kernel names, a fake trace with known times, and the waterfall worked out by hand."""

import pytest

from flopbench.timing.breakdown import (NAMES, Span, class_flops, class_times, classify, exclusive_times, shares_of,
                                        waterfall)

# Kernel and operator names as the profiler reports them (CUDA kernels from cuBLAS, CUTLASS, flash attention
# v2 / v3, the memory-efficient kernel, cuDNN, triton / inductor, fused AdamW, NCCL; CPU operators).
KERNELS = [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel"
     "__5x_cublas", "gemm"),
    ("nvjet_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "gemm"),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8>(cutlass_80_wmma_"
     "tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8::Params)", "gemm"),
    ("triton_tem_fused_mm_0", "gemm"),
    ("triton_tem_fused_addmm_gelu_3", "gemm"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::bfloat16_t, "
     "Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, true, false, false, true, true, false, "
     "false>(pytorch_flash::Flash_fwd_params)", "attention"),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64, 128, 128, 8, 4, 4, "
     "4, false, false, cutlass::bfloat16_t, Flash_kernel_traits<64, 128, 128, 8, cutlass::bfloat16_t> >, false, true, "
     "false, false, false, false, false>(pytorch_flash::Flash_bwd_params)", "attention"),
    ("void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<flash::CollectiveMainloopFwdSm90"
     "<2, cute::tuple<cute::C<1>, cute::C<1>, cute::C<1> >, cute::tuple<cute::C<128l>, cute::C<128l>, cute::C<64l> >, "
     "64, cutlass::bfloat16_t, float, cutlass::arch::Sm90, true, false> > > >(flash::FlashAttnFwdSm90::Params)",
     "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t, "
     "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)", "attention"),
    ("fmha_cutlassB_bf16_aligned_128x64_k128_sm80(PyTorchMemEffAttention::AttentionBackwardKernel<cutlass::arch::Sm80, "
     "cutlass::bfloat16_t, true, false, true, 128, 64, 128, false>::Params)", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x128_4x1x1_kernel0_0", "attention"),
    ("triton_tem_fused_flex_attention_0", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4, "
     "(at::native::ADAM_MODE)1, false>, bool, float, float, float, float, float, double*, float*, float*>", "optimizer"),
    ("aten::_fused_adamw_", "optimizer"),
    ("Optimizer.step#AdamW.step", "optimizer"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*, unsigned long, ncclWork*)", "communication"),
    ("ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)", "communication"),
    ("c10d::allreduce_", "communication"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, at::native::(anonymous "
     "namespace)::LogSoftMaxForwardEpilogue>(float*, float const*, int)", "loss"),
    ("void at::native::(anonymous namespace)::nll_loss_forward_reduce_cuda_kernel_2d<float, float, long>(float*, "
     "float*, float const*, long const*, float const*, bool, long, long, long, long)", "loss"),
    ("triton_red_fused__log_softmax_nll_loss_forward_2", "loss"),
    ("Memcpy DtoD (Device -> Device)", "memory"),
    ("IndexBackward0", "memory"),  # a gather's backward: a scatter (index_put_)
    ("aten::index_add_", "memory"),
    ("Memset (Device)", "memory"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >(int, "
     "at::native::FillFunctor<float>, std::array<char*, 1ul>)", "memory"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
     "{lambda()#3}::operator()() const::{lambda(float)#1}, std::array<char*, 2ul>, 4, TrivialOffsetCalculator<1, "
     "unsigned int>, TrivialOffsetCalculator<1, unsigned int>, at::native::memory::LoadWithCast<1>, "
     "at::native::memory::StoreWithCast<1> >", "memory"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>(int, float, "
     "c10::BFloat16 const*, c10::BFloat16 const*, c10::BFloat16 const*, float*, float*, c10::BFloat16*)",
     "norm_elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl(at::TensorIteratorBase&, "
     "at::native::GeluType)::{lambda()#2}::operator()() const::{lambda()#4}::operator()() const::{lambda(c10::BFloat16)"
     "#1}, std::array<char*, 2ul> >", "norm_elementwise"),
    ("triton_poi_fused_add_native_layer_norm_4", "norm_elementwise"),
    ("triton_per_fused_native_layer_norm_1", "norm_elementwise"),
    ("aten::native_layer_norm", "norm_elementwise"),
    ("cudaLaunchKernel", "other"),
    ("aten::empty", "other"),
]


@pytest.mark.parametrize("name, expected", KERNELS)
def test_classify_real_kernel_names(name, expected):
    assert classify(name) == expected


def test_classes_of_aten_ops_in_a_flop_count():
    counted = {"mm": 600, "addmm": 300, "bmm": 40, "_grouped_mm": 5, "_scaled_mm": 5,
               "_scaled_dot_product_flash_attention": 100, "_scaled_dot_product_flash_attention_backward": 250,
               "_scaled_dot_product_efficient_attention": 7, "_scaled_dot_product_cudnn_attention": 3}
    assert class_flops(counted) == {"gemm": 950, "attention": 360}


def test_exclusive_times_of_a_fake_trace_by_hand():
    # window 0..100 µs. CPU-like nesting: linear 10..40 holds addmm 15..35; a cross-entropy 50..70 holds a
    # log_softmax 52..60 (the loss keeps it); an unfused AdamW 75..95 holds mul_ 80..90 (the optimizer keeps
    # it); a kernel 90..110 runs past the window's end. Idle: 0..10, 40..50, 70..75.
    spans = [Span("aten::linear", 10, 30), Span("aten::addmm", 15, 20), Span("aten::cross_entropy_loss", 50, 20),
             Span("aten::_log_softmax", 52, 8), Span("Optimizer.step#AdamW.step", 75, 20), Span("aten::mul_", 80, 10),
             Span("aten::gelu", 90, 20)]
    times = exclusive_times(spans, (0, 100))
    assert times == {"idle": 25, "aten::linear": 10, "aten::addmm": 20, "aten::cross_entropy_loss": 20,
                     "Optimizer.step#AdamW.step": 20, "aten::gelu": 5}
    assert sum(times.values()) == 100
    by_class = class_times(spans, (0, 100))
    assert set(by_class) == set(NAMES)
    assert {k: v for k, v in by_class.items() if v} == {"idle": 25, "gemm": 30, "loss": 20, "optimizer": 20,
                                                        "norm_elementwise": 5}


def test_overlapping_kernels_are_not_counted_twice():
    # two streams: a gemm 0..60 and an NCCL all-reduce 40..100 overlap for 20 µs; the later one takes it
    spans = [Span("nvjet_tst_256x128", 0, 60), Span("ncclDevKernel_AllReduce_Sum_bf16", 40, 60)]
    times = class_times(spans, (0, 100))
    assert times["gemm"] == 40 and times["communication"] == 60 and times["idle"] == 0


def test_waterfall_by_hand():
    # a 100 ms step at a 1000 TFLOP/s peak, the clock held at 90 % of the rated one. Shares: gemm 0.6,
    # attention 0.1, norm/elementwise 0.12, loss 0.03, optimizer 0.05, memory 0.02, communication 0.03,
    # idle 0.05. Counted FLOPs: gemm 42e12, attention 3e12; model FLOPs 40e12.
    shares = {"gemm": 0.6, "attention": 0.1, "norm_elementwise": 0.12, "loss": 0.03, "optimizer": 0.05,
              "memory": 0.02, "communication": 0.03, "idle": 0.05}
    assert sum(shares.values()) == pytest.approx(1)
    flops = {"gemm": 42 * 10**12, "attention": 3 * 10**12}
    steps = waterfall(shares, flops, 40 * 10**12, 0.1, 1000.0, clock_ratio=0.9)
    # P·T = 1000e12 FLOP/s x 0.1 s = 1e14 FLOPs: gemm reaches 0.42, attention 0.03 of the peak over the step
    expected = [
        ("dense peak", 1.0),
        ("clock below the rated clock", 1 - 0.7 * 0.1),  # 0.93
        ("GEMM efficiency", 0.93 - (0.6 * 0.9 - 0.42)),  # 0.81
        ("attention at its achieved rate", 0.81 - (0.1 * 0.9 - 0.03)),  # 0.75
        ("non-matmul time", 0.75 - 0.22),  # 0.53
        ("communication", 0.53 - 0.03),  # 0.50
        ("idle", 0.50 - 0.05),  # 0.45 = HFU = 45e12 / 1e14
        ("recomputation and other hardware FLOPs", 0.45 - 0.05),  # 0.40
        ("MFU", 0.40),
    ]
    assert [s["name"] for s in steps] == [name for name, _ in expected]
    for s, (_, value) in zip(steps, expected):
        assert s["value"] == pytest.approx(value, abs=1e-12)
    assert steps[6]["value"] == pytest.approx((42 + 3) * 10**12 / 1e14)  # HFU


def test_waterfall_without_a_clock_reading_loses_nothing_to_the_clock():
    shares = shares_of({"gemm": 50.0, "idle": 50.0})
    steps = waterfall(shares, {"gemm": 10**12}, 10**12, 1.0, 4.0)
    assert steps[1]["loss"] == 0 and steps[-1]["value"] == pytest.approx(0.25)
    assert steps[2]["loss"] == pytest.approx(0.5 - 0.25)
