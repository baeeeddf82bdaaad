// admin_api.cpp — see admin_api.hpp.
#include "tests/integration/admin_api.hpp"

#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>

#include <fstream>
#include <sstream>

namespace flushgate::test {

Poco::JSON::Object::Ptr http_answer::json() const {
  try {
    return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception&) {  // Poco::Exception is one
    return nullptr;
  }
}

std::string admin_token(const daemon_fixture& daemon) {
  std::ifstream in(daemon.data_dir() / "admin.token");
  std::string token;
  std::getline(in, token);
  return token;
}

http_answer http_call(std::uint16_t port, const std::string& method, const std::string& target,
                      const std::string& body, const std::string& authorization,
                      std::chrono::seconds timeout) {
  Poco::Net::HTTPClientSession session("127.0.0.1", port);
  session.setTimeout(Poco::Timespan(static_cast<long>(timeout.count()), 0));
  Poco::Net::HTTPRequest req(method, target, Poco::Net::HTTPMessage::HTTP_1_1);
  if (!authorization.empty()) req.set("Authorization", authorization);
  if (!body.empty()) {
    req.setContentType("application/json");
    req.setContentLength(static_cast<std::streamsize>(body.size()));
  }
  http_answer a;
  try {
    session.sendRequest(req) << body;
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    std::ostringstream text;
    text << in.rdbuf();
    a.status = resp.getStatus();
    a.content_type = resp.getContentType();
    a.body = text.str();
    a.www_authenticate = resp.get("WWW-Authenticate", "");
  } catch (const Poco::Exception& e) {
    a.body = "client error: " + e.displayText();
  }
  return a;
}

}  // namespace flushgate::test
