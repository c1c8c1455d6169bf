// The OpenCV DNN backend: readNetFromONNX from memory, one cv::dnn::Net per session
// (a Net is not safe to share between threads), the default CPU target.

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include "backend.hpp"
#include "grove/errors.hpp"

namespace grove::ml {

namespace {

/// OpenCV's message on one line: its multi-line "> " continuation folded in.
std::string tidy(const std::string& msg) {
  std::string out;
  for (char ch : msg) {
    if (ch == '\n') {
      if (!out.empty() && out.back() != ' ')
        out += ' ';
    } else if (!(ch == '>' && (out.empty() || out.back() == ' '))) {
      out += ch;
    }
  }
  while (!out.empty() && out.back() == ' ')
    out.pop_back();
  std::string squeezed;
  for (char ch : out)
    if (!(ch == ' ' && !squeezed.empty() && squeezed.back() == ' '))
      squeezed += ch;
  return squeezed;
}

class opencv_session final : public session {
public:
  opencv_session(cv::dnn::Net net, std::vector<std::string> outputs)
    : net_(std::move(net)), outputs_(std::move(outputs)) {
  }

  caf::expected<std::vector<tensor>> run(const std::vector<tensor>& inputs) override {
    try {
      for (const auto& in : inputs) {
        std::vector<int> dims(in.shape.begin(), in.shape.end());
        // setInput copies the blob, so the Mat points into the request's own bytes (or
        // the batch's concatenation): the one copy of the input on the way in.
        cv::Mat blob(static_cast<int>(dims.size()), dims.data(), CV_32F,
                     const_cast<float*>(in.values().data()));
        net_.setInput(blob, in.name);
      }
      std::vector<cv::Mat> outs;
      net_.forward(outs, outputs_);
      std::vector<tensor> result;
      result.reserve(outs.size());
      for (size_t i = 0; i < outs.size(); ++i) {
        cv::Mat m = outs[i].type() == CV_32F ? outs[i] : cv::Mat{};
        if (m.empty() && !outs[i].empty())
          outs[i].convertTo(m, CV_32F);
        if (!m.isContinuous())
          m = m.clone();
        tensor t;
        t.name = i < outputs_.size() ? outputs_[i] : "output" + std::to_string(i);
        for (int d = 0; d < m.dims; ++d)
          t.shape.push_back(m.size[d]);
        auto n = m.total();
        t.data.assign(m.ptr<float>(), m.ptr<float>() + n);
        result.push_back(std::move(t));
      }
      return result;
    } catch (const cv::Exception& e) {
      return make_error(errc::plugin_failed, "backend (OpenCV DNN): " + tidy(e.msg));
    } catch (const std::exception& e) {
      return make_error(errc::plugin_failed, std::string{"backend (OpenCV DNN): "} + e.what());
    }
  }

  const std::vector<std::string>& output_names() const override {
    return outputs_;
  }

private:
  cv::dnn::Net net_;
  std::vector<std::string> outputs_;
};

class opencv_backend final : public backend {
public:
  opencv_backend() {
    // OpenCV's own logging would print to stderr besides the error we return.
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
  }

  std::string name() const override {
    return std::string{"opencv-dnn "} + CV_VERSION;
  }

  caf::expected<std::unique_ptr<session>>
  open(std::string_view onnx, const std::vector<std::string>& outputs) override {
    try {
      auto net = cv::dnn::readNetFromONNX(onnx.data(), onnx.size());
      if (net.empty())
        return make_error(errc::invalid_config, "OpenCV DNN read no layers from the model");
      net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
      net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
      auto names = outputs;
      if (names.empty())
        names = net.getUnconnectedOutLayersNames();
      return std::unique_ptr<session>{new opencv_session(std::move(net), std::move(names))};
    } catch (const cv::Exception& e) {
      return make_error(errc::invalid_config, "OpenCV DNN cannot load the model: " + tidy(e.msg));
    } catch (const std::exception& e) {
      return make_error(errc::invalid_config,
                        std::string{"OpenCV DNN cannot load the model: "} + e.what());
    }
  }
};

} // namespace

std::unique_ptr<backend> make_opencv_backend() {
  return std::make_unique<opencv_backend>();
}

} // namespace grove::ml
